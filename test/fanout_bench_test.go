package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"tether/actors/node"
	"tether/client"
)

// BenchmarkRoomFanOut measures a room's fan-out in one process: members
// raw TCP clients (each reading on a goroutine of its own) in one room,
// one sender pipelining messages of 128 bytes of data. One op is one
// message delivered to every member; ns/delivery divides by the members.
// The clients' reading is in the figure too (it shares the process), so
// compare runs of this benchmark with each other (benchstat), not with
// the room bench's server-only figures.
func BenchmarkRoomFanOut(b *testing.B) {
	for _, members := range []int{100, 1000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			// Self-contained, so that it runs unchanged on earlier versions
			// of the tree for a before/after comparison.
			cfg := nodeConfig()
			cfg.Log.Level = "warn"
			n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop(), Version: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = n.Shutdown(context.Background()) })
			addr := n.Addr("tcp").String()
			var got atomic.Int64
			var ready sync.WaitGroup
			for i := range members {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				if _, err := c.Write(packN(fmt.Sprintf(`{"op":"join","room":"bench","name":"m%d","id":1}`, i))); err != nil {
					b.Fatal(err)
				}
				ready.Add(1)
				go func() {
					joined := false
					for {
						msg, err := readPackN(c, time.Minute)
						if err != nil {
							return
						}
						switch {
						case !joined && msg == `{"op":"ok","id":1}`:
							joined = true
							ready.Done()
						case strings.HasPrefix(msg, `{"op":"message"`):
							got.Add(1)
						}
					}
				}()
			}
			ready.Wait()
			sender, err := client.DialTCP(context.Background(), addr, client.TCPOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sender.Close() })
			if _, err := sender.Call(client.Request{Op: "join", Room: "bench", Name: "sender"}); err != nil {
				b.Fatal(err)
			}
			// At most window sends unanswered; a send the room refuses
			// (busy: its backlog, and each sender's share of it, is
			// bounded) is sent again.
			const window = 32
			data := strings.Repeat("x", 128)
			send := func() error { return sender.Send(client.Request{Op: "send", ID: 2, Room: "bench", Data: data}) }
			acks := make(chan struct{}, window)
			go func() {
				for {
					msg, err := sender.RecvRaw()
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(string(msg), `{"op":"ok"`):
						<-acks
					case strings.Contains(string(msg), `"busy"`):
						time.Sleep(100 * time.Microsecond)
						_ = send()
					}
				}
			}()
			b.ResetTimer()
			for range b.N {
				acks <- struct{}{}
				if err := send(); err != nil {
					b.Fatal(err)
				}
			}
			want := int64(b.N * members)
			deadline := time.Now().Add(5 * time.Minute)
			for got.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d deliveries", got.Load(), want)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(want), "ns/delivery")
		})
	}
}
