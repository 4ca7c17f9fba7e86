package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tether/auth"
	"tether/client"
)

// runBenchConnect measures how many WebSocket connections a node takes a
// second, plain and authenticated, in one run (see its help in
// commands.go).
func runBenchConnect(c *call) error {
	var (
		plainURL, authURL, secret = c.String("url"), c.String("auth-url"), c.String("secret")
		conns, procs, parallel    = c.Int("conns"), c.Int("procs"), c.Int("parallel")
		rounds                    = c.Int("rounds")
	)
	out := c.out
	if secret == "" && authURL != "" {
		return errors.New("--secret: the token listener's auth.jwt.hmac_secret")
	}
	pid := benchServer(c)
	per := (conns + procs - 1) / procs
	run := func(url, secret string) (rate, cpu float64, err error) {
		args := []string{"connect", "--url", url, "--conns", strconv.Itoa(per), "--parallel", strconv.Itoa(parallel)}
		if secret != "" {
			args = append(args, "--secret", secret)
		}
		return connectRound(c.ctx(), "connect", procs, pid, args)
	}
	var plain, authed, plainCPU, authCPU []float64
	for i := range rounds {
		p, pc, err := run(plainURL, "")
		if err != nil {
			return fmt.Errorf("plain: %w", err)
		}
		plain, plainCPU = append(plain, p), append(plainCPU, pc)
		line := fmt.Sprintf("round %d: plain %6.0f connects/s %5.1f µs CPU each", i+1, p, pc)
		if authURL != "" {
			a, ac, err := run(authURL, secret)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			authed, authCPU = append(authed, a), append(authCPU, ac)
			line += fmt.Sprintf("   token %6.0f connects/s %5.1f µs CPU each", a, ac)
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "plain  %s connects/s, server CPU %s µs per connect (%d connections, %d processes x %d at once, %d rounds)\n",
		spread(plain), spreadf(plainCPU, "%.1f"), conns, procs, parallel, rounds)
	if len(authed) > 0 {
		fmt.Fprintf(out, "token  %s connects/s, server CPU %s µs per connect: upgrade + HS256 token in the URL + its ok\n", spread(authed), spreadf(authCPU, "%.1f"))
		rates, cpus := make([]float64, len(authed)), make([]float64, len(authed))
		for i := range authed {
			rates[i], cpus[i] = authed[i]/plain[i], authCPU[i]/plainCPU[i]
		}
		fmt.Fprintf(out, "token/plain per round: connects/s %s, CPU per connect %s\n", spreadf(rates, "%.2f"), spreadf(cpus, "%.2f"))
	}
	return nil
}

// connectRound measures one batch of connects by procs workers started
// with args: connects a second, and the server's CPU time per connect
// (with pid), which a shared machine's noise moves much less than the
// rate.
func connectRound(ctx context.Context, label string, procs, pid int, args []string) (rate, cpu float64, err error) {
	w, err := startWorkers(procs, args...)
	if err != nil {
		return 0, 0, err
	}
	defer w.stop()
	defer showProgress(label, 0, w, nil)()
	var before float64
	if pid != 0 {
		if before, err = cpuSeconds(pid); err != nil {
			return 0, 0, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// Each worker reports its window (after minting its tokens): the rate
	// is every connect over the union of the windows.
	reports, err := w.waitAll(ctx, "result")
	if err != nil {
		return 0, 0, err
	}
	var first, last int64
	total := 0
	for _, r := range reports {
		total += r.Conns
		if first == 0 || r.Started < first {
			first = r.Started
		}
		last = max(last, r.LastRecv)
	}
	if pid != 0 {
		after, err := cpuSeconds(pid)
		if err != nil {
			return 0, 0, err
		}
		cpu = (after - before) / float64(total) * 1e6
	}
	return float64(total) / time.Duration(last-first).Seconds(), cpu, nil
}

// spread writes the lowest and highest of xs: "7120-7480".
func spread(xs []float64) string { return spreadf(xs, "%.0f") }

func spreadf(xs []float64, format string) string {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf(format+"-"+format, lo, hi)
}

// runConnectWorker connects and closes conns clients, parallel at once,
// each from its own source address, and reports the window it took.
func runConnectWorker(c *call) error {
	var (
		url, secret             = c.String("url"), c.String("secret")
		conns, parallel, worker = c.Int("conns"), c.Int("parallel"), c.Int("worker")
	)
	tokens := make([]string, conns)
	if secret != "" {
		for i := range tokens {
			t, err := auth.Mint([]byte(secret), &auth.Identity{User: fmt.Sprintf("u%d-%d", worker, i), Name: "bench"}, time.Hour)
			if err != nil {
				return fail(worker, err)
			}
			tokens[i] = t
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	var done atomic.Int64
	reportProgress(worker, &done, nil)
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= conns {
					return
				}
				if err := connectOnce(ctx, url, tokens[i], worker, i); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fail(worker, firstErr)
	}
	report(workerReport{Worker: worker, Event: "result", Conns: conns, Started: start.UnixNano(), LastRecv: time.Now().UnixNano()})
	return nil
}

// connectOnce opens one connection, waits until it is usable (the
// welcome; with a token, the auth ok too) and closes it.
func connectOnce(ctx context.Context, url, token string, worker, i int) error {
	if token != "" {
		url += "?token=" + token
	}
	// Source addresses cycle over 4,000 per worker: the client closes
	// first, and each close leaves a TIME_WAIT on its address and port.
	if strings.HasPrefix(url, "http://") { // a Socket.IO server (bench peer)
		return connectPeer(ctx, url, sourceIP(worker, i%4000))
	}
	c, err := client.DialWebSocketFrom(ctx, url, sourceIP(worker, i%4000))
	if err != nil {
		return err
	}
	defer c.Close()
	if token != "" {
		if _, err := c.Expect("ok", 10*time.Second); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	return nil
}
