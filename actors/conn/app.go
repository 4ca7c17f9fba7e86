package conn

// App is the application that runs on a connection's messages: chat (the
// client protocol and rooms) or relay (events to NATS workers). Its
// methods run inside the connection actor, one at a time, so an App needs
// no locks; it must not block.
type App interface {
	// Opened runs once, before the first frame (chat sends welcome).
	Opened(c *Actor)
	// Frame runs for each whole message the client sent. data is valid
	// only during the call: copy what is kept or sent to another actor.
	Frame(c *Actor, data []byte)
	// Limited runs instead of Frame for a message past the listener's
	// rate limit (limits.messages_per_second): the message is dropped;
	// the App may say so (chat answers error rate_limited).
	Limited(c *Actor, data []byte)
	// Receive runs for actor messages the connection itself does not
	// handle (replies from rooms, pushes).
	Receive(c *Actor, msg any)
	// Closing runs on a TCP connection the server closes while the socket
	// still works (idle, no_pong, kicked, server_shutdown, bad input...),
	// before the last queued bytes leave: the App may Send a final frame
	// saying why (Actor.CloseMessage). WebSocket clients get a close frame
	// instead, whose reason holds the reconnect hint of a draining node;
	// when the hint's URLs do not fit there, Closing runs on WebSocket
	// too, and its message is the last text message before the frame.
	Closing(c *Actor, reason Reason)
	// Closed runs once, after the socket is closed, with the reason.
	Closed(c *Actor, reason Reason)
	// Describe adds the application's part (rooms, user id) to the
	// connection's info.
	Describe(info *Info)
}

// NewApp makes the App of one connection.
type NewApp func(c *Actor) App
