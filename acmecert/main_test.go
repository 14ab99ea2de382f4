package acmecert

import (
	"testing"

	"github.com/zenconn/server/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
