// Package packaging holds no code: its tests check what `make install` and
// `make deb` put on a host (packaging/debian holds the maintainer scripts)
// and that every systemd unit in systemd/ passes `systemd-analyze verify`.
// They skip, saying why, where dpkg-deb or systemd-analyze is missing.
package packaging
