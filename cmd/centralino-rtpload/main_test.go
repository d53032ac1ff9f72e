package main

import (
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<24; us = us*17/16 + 1 {
		b := bucket(us)
		if b < prev || bucketUpper(b) < us || (b > 0 && bucketUpper(b-1) >= us) {
			t.Fatalf("%d µs: bucket %d [%d, %d]", us, b, bucketUpper(b-1)+1, bucketUpper(b))
		}
		prev = b
	}
	var h histogram
	for i := range 1000 {
		h.add(time.Duration(i+1) * time.Microsecond)
	}
	if p50 := h.quantile(0.5); p50 < 490*time.Microsecond || p50 > 520*time.Microsecond {
		t.Fatalf("p50 %s", p50)
	}
}
