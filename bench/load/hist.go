package main

import "math/bits"

// hist is a log-linear latency histogram in microseconds: 1 µs buckets up to
// 1,024 µs, then 64 buckets per power of two (under 1.6% error), up to ~2^40 µs.
type hist struct {
	counts [histSize]int64
	n      int64
	max    int64
}

const (
	histLinear = 1024
	histSub    = 64
	histSize   = histLinear + 31*histSub
)

func histIndex(us int64) int {
	if us < 0 {
		us = 0
	}
	if us < histLinear {
		return int(us)
	}
	e := bits.Len64(uint64(us)) - 1 // >= 10
	if e > 40 {
		return histSize - 1
	}
	sub := int(us>>(e-6)) & (histSub - 1)
	return histLinear + (e-10)*histSub + sub
}

// histValue is the lower bound of bucket i in µs.
func histValue(i int) int64 {
	if i < histLinear {
		return int64(i)
	}
	j := i - histLinear
	e := j/histSub + 10
	sub := int64(j % histSub)
	return (histSub + sub) << (e - 6)
}

func (h *hist) record(us int64) {
	h.counts[histIndex(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

// quantile returns the value at quantile q (0..1) in µs.
func (h *hist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var c int64
	for i, v := range h.counts {
		c += v
		if c >= rank {
			return min(histValue(i), h.max)
		}
	}
	return h.max
}

// sparse returns [index, count] pairs of non-empty buckets, for merging
// results across processes.
func (h *hist) sparse() [][2]int64 {
	var out [][2]int64
	for i, v := range h.counts {
		if v != 0 {
			out = append(out, [2]int64{int64(i), v})
		}
	}
	return out
}

func (h *hist) merge(sp [][2]int64, max int64) {
	for _, p := range sp {
		if p[0] >= 0 && p[0] < histSize {
			h.counts[p[0]] += p[1]
			h.n += p[1]
		}
	}
	if max > h.max {
		h.max = max
	}
}
