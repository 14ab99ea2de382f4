package store

import (
	"os"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
)

func expOptions(po *pebble.Options) {
	for _, kv := range strings.Split(os.Getenv("ZC_EXP"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "nocomp": // levels 0..n-1 uncompressed
			for i := 0; i < n && i < len(po.Levels); i++ {
				po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
			}
		case "l0":
			po.L0CompactionThreshold = n
			po.L0StopWritesThreshold = 4 * n
		case "mem":
			po.MemTableSize = uint64(n) << 20
		case "lbase":
			po.LBaseMaxBytes = int64(n) << 20
		case "l0file":
			po.L0CompactionFileThreshold = n
		}
	}
}
