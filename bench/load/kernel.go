package main

// The kernel's memory for sockets, machine-wide: the slab caches (socket
// structures, TCP control blocks, dentries of socket inodes, ...) from
// /proc/meminfo and the TCP buffer pages from /proc/net/sockstat (the
// sockets of the calling process's network namespace).

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// kernelSample is the kernel's memory at one moment.
type kernelSample struct {
	slabKiB, sunreclaimKiB int64 // /proc/meminfo Slab, SUnreclaim
	tcpInuse, tcpMemPages  int64 // /proc/net/sockstat TCP: inuse, mem (pages)
	tcpOrphan, tcpTW       int64 // TCP: orphan, tw
}

func sampleKernel() (kernelSample, error) {
	var k kernelSample
	var err error
	if k.slabKiB, err = readKiBField("/proc/meminfo", "Slab:"); err != nil {
		return k, err
	}
	if k.sunreclaimKiB, err = readKiBField("/proc/meminfo", "SUnreclaim:"); err != nil {
		return k, err
	}
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return k, err
	}
	return k, parseSockstat(b, &k)
}

// parseSockstat reads the TCP line of /proc/net/sockstat:
// "TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1".
func parseSockstat(b []byte, k *kernelSample) error {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("TCP:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return fmt.Errorf("sockstat: %q", line)
			}
			switch f[i] {
			case "inuse":
				k.tcpInuse = v
			case "mem":
				k.tcpMemPages = v
			case "orphan":
				k.tcpOrphan = v
			case "tw":
				k.tcpTW = v
			}
		}
		return nil
	}
	return fmt.Errorf("sockstat: no TCP line")
}

func (k kernelSample) fields() map[string]any {
	return map[string]any{"slab_kib": k.slabKiB, "sunreclaim_kib": k.sunreclaimKiB,
		"tcp_inuse": k.tcpInuse, "tcp_mem_pages": k.tcpMemPages, "tcp_orphan": k.tcpOrphan, "tcp_tw": k.tcpTW}
}

// kernelFigures adds the kernel's growth from before to after to out, per
// connection (conns: the client and the server end of each are sockets of
// this machine) and per socket (the TCP sockets in use that were added).
func kernelFigures(out map[string]any, before, after kernelSample, conns int) {
	out["kernel_before"] = before.fields()
	out["kernel_after"] = after.fields()
	page := int64(os.Getpagesize() / 1024)
	slab, unrec := after.slabKiB-before.slabKiB, after.sunreclaimKiB-before.sunreclaimKiB
	tcpMem := (after.tcpMemPages - before.tcpMemPages) * page
	socks := after.tcpInuse - before.tcpInuse
	out["slab_growth_kib"], out["sunreclaim_growth_kib"] = slab, unrec
	out["tcp_mem_growth_kib"], out["tcp_sockets_added"] = tcpMem, socks
	if conns > 0 {
		n := float64(conns)
		out["slab_kib_per_conn"] = round3(float64(slab) / n)
		out["sunreclaim_kib_per_conn"] = round3(float64(unrec) / n)
		out["tcp_mem_kib_per_conn"] = round3(float64(tcpMem) / n)
	}
	if socks > 0 {
		n := float64(socks)
		out["slab_kib_per_socket"] = round3(float64(slab) / n)
		out["sunreclaim_kib_per_socket"] = round3(float64(unrec) / n)
		out["tcp_mem_kib_per_socket"] = round3(float64(tcpMem) / n)
	}
}
