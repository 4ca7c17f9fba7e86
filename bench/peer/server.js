// The peer that `tether bench peer` measures tether against: a Socket.IO 4
// server doing what tether's chat rooms do, and nothing else.
//
//   node server.js [--host 127.0.0.1] [--port 9700] [--ping-interval 25000] [--ping-timeout 20000]
//
// Events from clients (on the default namespace):
//   join  (room[, ack])           join a room; ack({ok: true})
//   send  ({room, data}[, ack])   the room's other members get
//                                 "message" {room, from, data, time},
//                                 like tether's room send; ack({ok: true})
// HTTP:
//   POST /broadcast {"room": ..., "data": ...}   every member of the room
//                                 gets the same "message" (from ""); 200 {"ok":true}
//
// To be fair to both: WebSocket transport only (no long-polling, no
// upgrade dance), no per-message deflate and no HTTP compression (tether
// has none), a ping every 25 s as tether's WebSocket listener (pingTimeout
// 20 s). On start it prints one JSON line on stdout, {"url": ..., "pid": ...},
// which the bench reads; --port 0 takes any free port.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const host = arg("host", "127.0.0.1");
const port = Number(arg("port", process.env.PORT || "9700"));
const pingInterval = Number(arg("ping-interval", "25000")); // ms; tests shorten it
const pingTimeout = Number(arg("ping-timeout", "20000"));

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/broadcast") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (e) {
      res.writeHead(400, { "content-type": "application/json" }).end('{"error":"body is not JSON"}');
      return;
    }
    if (typeof body.room !== "string" || body.room === "") {
      res.writeHead(400, { "content-type": "application/json" }).end('{"error":"room missing"}');
      return;
    }
    io.to(body.room).emit("message", { room: body.room, from: "", data: body.data, time: new Date().toISOString() });
    res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
  });
});

const io = new Server(server, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval,
  pingTimeout,
  maxHttpBufferSize: 64 << 10, // tether's max_frame
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room === "string" && room !== "") {
      socket.join(room);
    }
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("send", (msg, ack) => {
    if (msg && typeof msg.room === "string" && socket.rooms.has(msg.room)) {
      socket.to(msg.room).emit("message", { room: msg.room, from: socket.id, data: msg.data, time: new Date().toISOString() });
    }
    if (typeof ack === "function") ack({ ok: true });
  });
});

server.listen(port, host, () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ url: `http://${a.address}:${a.port}`, pid: process.pid }) + "\n");
});

// Stop on SIGTERM and SIGINT without waiting for the clients.
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
