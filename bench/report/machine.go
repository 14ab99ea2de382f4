package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineFile is the base name of the machine description in the results
// folder (bench/results/machine.json), written by run-all.sh when a run
// starts, so RESULTS.md describes the machine that measured, not the one
// that renders.
const machineFile = "machine"

// Machine describes the computer and the code a run measured.
type Machine struct {
	Date      string `json:"date"` // when the description was taken (a run's start), RFC 3339
	CPU       string `json:"cpu"`  // model name of /proc/cpuinfo
	CPUs      int    `json:"cpus"` // logical CPUs usable (nproc)
	Sockets   int    `json:"sockets,omitempty"`
	CoresPer  int    `json:"cores_per_socket,omitempty"`
	MemKiB    int64  `json:"mem_kib"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os,omitempty"`
	Go        string `json:"go"`
	Git       string `json:"git"`
	GitDirty  int    `json:"git_uncommitted_files"`
	DataDir   string `json:"data_dir"`            // where the scenarios' data folders go (TMPDIR)
	DataFS    string `json:"data_fs,omitempty"`   // file system type and device under DataDir
	DataDisk  string `json:"data_disk,omitempty"` // the block device: model, rotational
	Scenarios string `json:"scenarios,omitempty"` // what the run was asked to measure
}

// probeMachine reads the description of this machine.
func probeMachine(now time.Time) Machine {
	m := Machine{Date: now.UTC().Format(time.RFC3339), CPUs: runtime.NumCPU()}
	m.CPU, m.Sockets, m.CoresPer = cpuInfo()
	m.MemKiB = memTotalKiB()
	m.Kernel = strings.TrimSpace(readString("/proc/sys/kernel/osrelease"))
	m.OS = osRelease()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	} else {
		m.Go = runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Git = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "status", "--porcelain").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) != "" {
				m.GitDirty++
			}
		}
	}
	m.DataDir = os.Getenv("TMPDIR")
	if m.DataDir == "" {
		m.DataDir = "/tmp"
	}
	m.DataFS, m.DataDisk = diskOf(m.DataDir)
	return m
}

func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// cpuInfo: the model name, and the sockets and cores per socket when known.
func cpuInfo() (model string, sockets, coresPer int) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "", 0, 0
	}
	defer f.Close()
	phys := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "model name":
			if model == "" {
				model = v
			}
		case "physical id":
			phys[v] = true
		case "cpu cores":
			if coresPer == 0 {
				coresPer, _ = strconv.Atoi(v)
			}
		}
	}
	return model, len(phys), coresPer
}

func memTotalKiB() int64 {
	for _, l := range strings.Split(readString("/proc/meminfo"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func osRelease() string {
	for _, l := range strings.Split(readString("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// diskOf finds the mount holding dir (/proc/self/mountinfo) and describes
// its file system and block device.
func diskOf(dir string) (fs, disk string) {
	if abs, err := filepath.EvalSymlinks(dir); err == nil {
		dir = abs
	}
	best := ""
	for _, l := range strings.Split(readString("/proc/self/mountinfo"), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 2 {
			continue
		}
		mp := unescapeMount(a[4])
		if !within(dir, mp) || len(mp) < len(best) {
			continue
		}
		best = mp
		fs = b[0] + " on " + b[1]
		if mp != "/" {
			fs += " (mounted on " + mp + ")"
		}
		disk = blockInfo(a[2])
	}
	return fs, disk
}

func within(dir, mp string) bool {
	return mp == "/" || dir == mp || strings.HasPrefix(dir, mp+"/")
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// blockInfo describes the block device major:minor from /sys/dev/block.
func blockInfo(majMin string) string {
	base := "/sys/dev/block/" + majMin
	target, err := filepath.EvalSymlinks(base)
	if err != nil {
		return ""
	}
	dev := filepath.Base(target)
	// A partition's queue/ and device/ are its parent's.
	if _, err := os.Stat(filepath.Join(target, "partition")); err == nil {
		target = filepath.Dir(target)
	}
	var parts []string
	if m := strings.TrimSpace(readString(filepath.Join(target, "device", "model"))); m != "" {
		parts = append(parts, m)
	}
	switch strings.TrimSpace(readString(filepath.Join(target, "queue", "rotational"))) {
	case "0":
		parts = append(parts, "not rotational")
	case "1":
		parts = append(parts, "rotational")
	}
	if sz := strings.TrimSpace(readString(filepath.Join(target, "size"))); sz != "" {
		if n, err := strconv.ParseInt(sz, 10, 64); err == nil && n > 0 {
			parts = append(parts, fmt.Sprintf("%.0f GiB", float64(n)*512/(1<<30)))
		}
	}
	if len(parts) == 0 {
		return dev
	}
	return dev + ": " + strings.Join(parts, ", ")
}

// machineCmd is "report machine": prints this machine's description.
func machineCmd(args []string, stdout io.Writer, now func() time.Time) int {
	scen := ""
	if len(args) == 2 && args[0] == "--scenarios" {
		scen = args[1]
	} else if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "usage: report machine [--scenarios LIST]")
		return 2
	}
	m := probeMachine(now())
	m.Scenarios = scen
	b, _ := json.MarshalIndent(m, "", "  ")
	_, _ = fmt.Fprintln(stdout, string(b))
	return 0
}

// readMachine reads dir/machine.json; ok is false when there is none.
func readMachine(dir string) (Machine, bool) {
	var m Machine
	b, err := os.ReadFile(filepath.Join(dir, machineFile+".json"))
	if err != nil || json.Unmarshal(b, &m) != nil {
		return m, false
	}
	return m, true
}
