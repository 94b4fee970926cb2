package cluster

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"substrate/internal/faults"
	"substrate/internal/netutil"
)

// The broker peer port carries Raft's transport (rafthttp, HTTP) and the
// node's own endpoints under /substrate/ (forwarded client connections,
// status). They are told apart by the request line of each connection:
// Raft's connections go to the Raft node with its read and write
// timeouts, ours to a server without them, since a forwarded AMQP
// connection may be idle for a heartbeat interval and more.

// peerMux splits a listener's connections between two listeners.
type peerMux struct {
	ln   net.Listener
	log  *slog.Logger
	raft *chanListener // Raft's connections
	own  *chanListener // /substrate/ connections
	wg   sync.WaitGroup
}

// ownPrefix starts the request line of every connection the node serves
// itself.
const ownPrefix = " /substrate/"

func newPeerMux(ln net.Listener, log *slog.Logger) *peerMux {
	return &peerMux{ln: ln, log: log, raft: newChanListener(ln.Addr()), own: newChanListener(ln.Addr())}
}

// run accepts until the listener closes, then closes both halves.
func (m *peerMux) run() {
	defer m.wg.Done()
	defer m.raft.Close()
	defer m.own.Close()
	var bo netutil.AcceptBackoff
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Any other failure (EMFILE, say) is retried: without its
			// peer port the node would leave the Raft group.
			d, first := bo.Next()
			if first {
				m.log.Warn("amqp cluster: peer accept failing, backing off until it recovers", "err", err)
			}
			time.Sleep(d)
			continue
		}
		bo.Reset()
		m.wg.Add(1)
		go m.classify(c)
	}
}

// classify reads c's request line and hands c, that line unread, to the
// half that serves it.
func (m *peerMux) classify(c net.Conn) {
	defer m.wg.Done()
	defer faults.Recover(m.log, faults.AMQP, c.RemoteAddr().String(), func(any) { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 1024)
	line, err := br.ReadSlice('\n')
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	head := string(line)
	pc := &bufConn{Conn: c, r: io.MultiReader(strings.NewReader(head), br), remote: c.RemoteAddr()}
	_, rest, _ := strings.Cut(head, " ")
	to := m.raft
	if strings.HasPrefix(" "+rest, ownPrefix) {
		to = m.own
	}
	if !to.put(pc) {
		c.Close()
	}
}

// close closes the real listener and waits for the classifiers.
func (m *peerMux) close() {
	m.ln.Close()
	m.wg.Wait()
}

// chanListener is a net.Listener fed by peerMux.
type chanListener struct {
	addr   net.Addr
	c      chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(a net.Addr) *chanListener {
	return &chanListener{addr: a, c: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) put(c net.Conn) bool {
	select {
	case l.c <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// ownServer serves the node's /substrate/ endpoints on l.
func ownServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}
