package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// runBenchFloor runs the floor of the room bench: a bare WebSocket server
// with one room, written as simply as a fan-out can be. It speaks just
// enough of the chat protocol for the bench's clients (welcome, join and
// its ok, send) and delivers each message by encoding its frame once and
// writing it to every member with one write(2) each, from the sender's
// goroutine. No actors, no queues, no batching: what tether costs above
// it is tether's own doing. `tether bench room --floor` starts it in a
// process of its own, so that its CPU is measured apart from the clients'.
func runBenchFloor(c *call) error {
	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return err
	}
	// The parent reads the address from the first line.
	fmt.Println("ws://" + ln.Addr().String() + "/ws")
	f := &floor{members: map[*floorConn]bool{}}
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		go f.serve(nc)
	}
}

type floor struct {
	mu      sync.Mutex
	members map[*floorConn]bool
	seq     int
}

type floorConn struct {
	c  net.Conn
	mu sync.Mutex // the fan-out and the connection's own replies write
	id string
}

func (c *floorConn) write(frame []byte) {
	c.mu.Lock()
	_, _ = c.c.Write(frame) // one write(2) while the socket has room
	c.mu.Unlock()
}

func textFrame(payload []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload))})
	b.Write(payload)
	return b.Bytes()
}

func (f *floor) serve(nc net.Conn) {
	defer nc.Close()
	if _, err := ws.Upgrade(nc); err != nil {
		return
	}
	f.mu.Lock()
	f.seq++
	c := &floorConn{c: nc, id: "floor." + strconv.Itoa(f.seq)}
	f.mu.Unlock()
	c.write(textFrame([]byte(`{"op":"welcome","conn":"` + c.id + `","node":"floor","heartbeat":{}}`)))
	defer func() {
		f.mu.Lock()
		delete(f.members, c)
		f.mu.Unlock()
	}()
	for {
		data, op, err := wsutil.ReadClientData(nc)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		var req struct {
			Op   string          `json:"op"`
			ID   json.RawMessage `json:"id"`
			Room string          `json:"room"`
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(data, &req) != nil {
			continue
		}
		switch req.Op {
		case "join":
			f.mu.Lock()
			f.members[c] = true
			f.mu.Unlock()
		case "send":
			// The same event tether sends, encoded once.
			msg, _ := json.Marshal(struct {
				Op   string          `json:"op"`
				Room string          `json:"room"`
				From string          `json:"from"`
				Name string          `json:"name"`
				Data json.RawMessage `json:"data"`
				Time time.Time       `json:"time"`
			}{"message", req.Room, c.id, "sender", req.Data, time.Now().UTC()})
			frame := textFrame(msg)
			f.mu.Lock()
			for m := range f.members {
				if m != c {
					m.write(frame)
				}
			}
			f.mu.Unlock()
		}
		if req.ID != nil {
			c.write(textFrame([]byte(`{"op":"ok","id":` + string(req.ID) + `}`)))
		}
	}
}

// cpuSeconds reads a process's user and system CPU time from /proc.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name: state is field 3,
	// utime and stime are fields 14 and 15, in clock ticks.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on Linux.
const clockTicks = 100
