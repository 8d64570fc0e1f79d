package baseline

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// dialConcurrency bounds the connections being opened at once: enough to open
	// 20k in seconds, few enough not to overflow the listener's accept backlog.
	dialConcurrency = 200
	// progressEvery is how many opened connections separate two progress calls.
	progressEvery = 1000
	dialTimeout   = 10 * time.Second
)

// dialerFor returns the dialer for connection i: connections are spread over srcs
// round-robin, because one source address has only ~28k ephemeral ports per
// destination. With no srcs the kernel picks the source.
func dialerFor(srcs []net.IP, i int) *net.Dialer {
	d := &net.Dialer{Timeout: dialTimeout}
	if len(srcs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: srcs[i%len(srcs)]}
	}
	return d
}

// openAll calls open(i) for i in [0,n) with at most dialConcurrency calls in flight,
// calling progress(opened) every progressEvery successes. It stops handing out work
// at the first error and returns it; open must record what it opened so the caller
// can close it.
func openAll(n int, open func(i int) error, progress func(int)) error {
	var (
		next     atomic.Int64
		opened   atomic.Int64
		failed   atomic.Bool
		firstErr error
		errOnce  sync.Once
		progMu   sync.Mutex
		reported int64
		wg       sync.WaitGroup
	)
	workers := min(dialConcurrency, n)
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := open(i); err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
				if k := opened.Add(1); progress != nil && k%progressEvery == 0 {
					progMu.Lock()
					if k > reported { // two workers may cross marks in either order
						reported = k
						progress(int(k))
					}
					progMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
