package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestProxyAsk: the backend's status decides: 200 with an identity
// allows, 401 and 403 refuse (ErrDenied), anything else, an identity
// tether cannot use, or no answer in time is the backend failing.
func TestProxyAsk(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/allow":
			w.Write([]byte(`{"user":"ann","name":"Ann","rooms":["lobby"],"expires_at":4102444800}`))
		case "/unauthorized":
			w.WriteHeader(http.StatusUnauthorized)
		case "/forbidden":
			w.WriteHeader(http.StatusForbidden)
		case "/bad-user":
			w.Write([]byte(`{"user":"a.b"}`))
		case "/slow":
			<-release
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer func() {
		close(release) // the slow handler ends first: Close waits for it
		backend.Close()
	}()
	ask := func(path string) (*Identity, error) {
		return NewProxy(backend.URL+path, 200*time.Millisecond).Ask(context.Background(), &ProxyRequest{Listener: "ws", Conn: "n.1"})
	}
	id, err := ask("/allow")
	if err != nil || id.User != "ann" || id.Name != "Ann" || len(id.Rooms) != 1 || id.Expires.Year() != 2100 {
		t.Fatalf("allow: %+v %v", id, err)
	}
	for _, path := range []string{"/unauthorized", "/forbidden"} {
		if _, err := ask(path); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v; want ErrDenied", path, err)
		}
	}
	for _, path := range []string{"/fail", "/bad-user", "/slow"} {
		if _, err := ask(path); err == nil || errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v; want a failure that is not a refusal", path, err)
		}
	}
}
