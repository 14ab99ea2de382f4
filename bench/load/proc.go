package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// readRSSKiB returns VmRSS of pid in KiB from /proc/<pid>/status.
func readRSSKiB(pid int) (int64, error) {
	return readKiBField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

// readPSSKiB returns the proportional set size of pid in KiB from
// /proc/<pid>/smaps_rollup: every page shared by n processes (the
// executable's text mapped by the agent and each worker, the rings) counts
// 1/n, so a sum over the node's processes counts each page once.
func readPSSKiB(pid int) (int64, error) {
	return readKiBField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

// readKiBField returns the number after prefix at the start of a line of
// the /proc file name ("VmRSS:   1234 kB").
func readKiBField(name, prefix string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(prefix)); ok {
			f := strings.Fields(string(rest))
			if len(f) < 1 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", prefix, name)
}

// readCPUus returns user+system CPU time of pid (0: this process) in
// microseconds from /proc/<pid>/stat (resolution: one clock tick, 10 ms).
func readCPUus(pid int) (int64, error) {
	u, s, err := readCPUSplit(pid)
	return u + s, err
}

// readCPUSplit returns user and system CPU time of pid in microseconds.
func readCPUSplit(pid int) (user, sys int64, err error) {
	name := "/proc/self/stat"
	if pid > 0 {
		name = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces: fields start after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s: malformed", name)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%s: malformed", name)
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s: malformed utime/stime", name)
	}
	return ut * (1_000_000 / userHZ), st * (1_000_000 / userHZ), nil
}

// sumRSS sums VmRSS over pids.
func sumRSS(pids []int) (int64, error) { return sumKiB(pids, readRSSKiB) }

// sumPSS sums the proportional set size over pids: the memory of the
// processes together, shared pages counted once.
func sumPSS(pids []int) (int64, error) { return sumKiB(pids, readPSSKiB) }

func sumKiB(pids []int, read func(int) (int64, error)) (int64, error) {
	var t int64
	for _, p := range pids {
		v, err := read(p)
		if err != nil {
			return 0, err
		}
		t += v
	}
	return t, nil
}

// sumCPU sums user and system CPU µs over pids.
func sumCPU(pids []int) (user, sys int64, err error) {
	for _, p := range pids {
		u, s, err := readCPUSplit(p)
		if err != nil {
			return 0, 0, err
		}
		user += u
		sys += s
	}
	return user, sys, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// machineBusyUs returns the CPU time all CPUs spent outside idle and iowait,
// in µs, from the first line of /proc/stat.
func machineBusyUs() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: malformed")
	}
	var busy int64
	// user nice system idle iowait irq softirq steal ...
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return busy * (1_000_000 / userHZ), nil
}
