package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/zenconn/server/engine"
	"golang.org/x/sys/unix"
)

// The workers listen on --addr together with SO_REUSEPORT, which would
// also let a second node of the same user listen on it and silently take
// a share of the connections. claimPort refuses a port that another
// process serves, in two steps:
//
//  1. A probe binds the address without SO_REUSEPORT: it fails if any
//     socket is bound there (a running node, or any other server).
//  2. A placeholder then binds it with SO_REUSEPORT and listens, and is
//     held until the workers listen. Between the probe and the
//     placeholder, a second node starting at the same moment could slip
//     in; so once the placeholder listens, the kernel's table of TCP
//     listeners (asked through sock_diag, else read from /proc/net/tcp and
//     tcp6) must show no other listener on the port. Of two nodes racing, the later check sees the other's
//     placeholder: at least one of them, possibly both, refuses to start,
//     and none serves a share of the other's connections.

// errPortServed is the claim's complaint about a port another process
// serves.
var errPortServed = errors.New("another process is already listening on this port (a second node would silently take a share of its connections)")

// claimPort checks the address of flag (--addr, --tls-addr), makes sure
// no other process serves it, and reserves it: it returns the address with
// its port resolved (port 0 picks a free one) and the placeholder to close
// once the workers listen.
func claimPort(flag, addr string) (string, io.Closer, error) {
	host, p, err := parseAddr(flag, addr)
	if err != nil {
		return "", nil, err
	}
	if p != 0 {
		probe, err := net.Listen("tcp", addr)
		if err != nil {
			return "", nil, fmt.Errorf("%s %s: %w", flag, addr, portErr(err))
		}
		_ = probe.Close()
	}
	ln, err := engine.ListenReusePort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("%s %s: %w", flag, addr, portErr(err))
	}
	tcp := ln.Addr().(*net.TCPAddr)
	if err := checkAlone(ln, tcp); err != nil {
		_ = ln.Close()
		return "", nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port)), ln, nil
}

// parseAddr checks the form of flag's address: host:port with a port
// number.
func parseAddr(flag, addr string) (host string, port uint64, err error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", flag, err)
	}
	if port, err = strconv.ParseUint(ps, 10, 16); err != nil {
		return "", 0, fmt.Errorf("%s: invalid port %q", flag, ps)
	}
	return host, port, nil
}

// portErr words an address-in-use error for the user.
func portErr(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return errPortServed
	}
	return err
}

// checkAlone fails when a listening socket other than ln shares its port
// on an overlapping address. Without /proc (not Linux) it checks nothing.
func checkAlone(ln net.Listener, at *net.TCPAddr) error {
	own, err := socketInode(ln)
	if err != nil {
		return nil
	}
	for _, t := range []struct {
		family uint8
		table  string
	}{{unix.AF_INET, "/proc/net/tcp"}, {unix.AF_INET6, "/proc/net/tcp6"}} {
		others, err := listenersDiag(t.family, at.Port, own)
		if err != nil {
			others, err = listenersOn(t.table, at.Port, own)
		}
		if err != nil {
			continue
		}
		for _, ip := range others {
			if ip.IsUnspecified() || at.IP.IsUnspecified() || ip.Equal(at.IP) {
				return errPortServed
			}
		}
	}
	return nil
}

// socketInode is the inode of ln's socket, its name in /proc/net/tcp.
func socketInode(ln net.Listener) (uint64, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return 0, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	return st.Ino, serr
}

// tcpListen is the state column of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// listenersOn returns the local addresses of the listening sockets on
// port in a /proc/net/tcp-style table, except the socket with inode skip.
func listenersOn(table string, port int, skip uint64) ([]net.IP, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ips []net.IP
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != tcpListen {
			continue
		}
		ip, p, ok := parseProcAddr(fields[1])
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if !ok || err != nil || p != port || inode == skip {
			continue
		}
		ips = append(ips, ip)
	}
	return ips, sc.Err()
}

// parseProcAddr parses "0100007F:1F90": the address in hex, as 32-bit
// words in host (little-endian) order, and the port in hex.
func parseProcAddr(s string) (net.IP, int, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	raw, herr := hex.DecodeString(a)
	if err != nil || herr != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.IP(raw), int(port), true
}
