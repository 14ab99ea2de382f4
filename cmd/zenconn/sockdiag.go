package main

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenersDiag lists the addresses of the TCP sockets of family (AF_INET
// or AF_INET6) listening on port, but the one with inode skip, through the
// kernel's socket diagnostics (NETLINK_SOCK_DIAG). Asked for listeners
// only, the kernel walks its table of listening sockets and never the
// established ones: at a million connections /proc/net/tcp is hundreds of
// megabytes of text that take seconds to read, this answer a few
// messages.
func listenersDiag(family uint8, port int, skip uint64) ([]net.IP, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	if err := unix.Sendto(fd, diagRequest(family), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var ips []net.IP
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return ips, nil
			case unix.NLMSG_ERROR:
				return nil, errors.New("sock_diag: the kernel refused the request")
			}
			if ip, ok := diagListener(m.Data, port, skip); ok {
				ips = append(ips, ip)
			}
		}
	}
}

// Sizes and offsets of struct inet_diag_req_v2 and struct inet_diag_msg
// (linux/inet_diag.h).
const (
	diagReqLen   = 56
	diagMsgLen   = 72
	diagMsgSport = 4  // inside the message's inet_diag_sockid, big-endian
	diagMsgSrc   = 8  // 4 or 16 bytes of address
	diagMsgInode = 68 // host order
)

// diagRequest is a netlink dump request for family's TCP listeners.
func diagRequest(family uint8) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	r := b[unix.NLMSG_HDRLEN:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 1<<unix.BPF_TCP_LISTEN)
	return b
}

// diagListener reads one inet_diag_msg: the listener's address when it
// listens on port and is not skip.
func diagListener(m []byte, port int, skip uint64) (net.IP, bool) {
	if len(m) < diagMsgLen {
		return nil, false
	}
	if int(binary.BigEndian.Uint16(m[diagMsgSport:])) != port ||
		uint64(binary.NativeEndian.Uint32(m[diagMsgInode:])) == skip {
		return nil, false
	}
	n := net.IPv4len
	if m[0] == unix.AF_INET6 {
		n = net.IPv6len
	}
	return net.IP(append([]byte(nil), m[diagMsgSrc:diagMsgSrc+n]...)), true
}
