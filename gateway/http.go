package gateway

// serveHTTP starts the HTTP API (being written).
func (s *Server) serveHTTP(addr string) (closer func() error, bound string, err error) {
	return func() error { return nil }, addr, nil
}
