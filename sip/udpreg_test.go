package sip

import (
	"testing"
	"time"
)

func TestReplyCacheRemembersThenForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newReplyCache()
	c.now = func() time.Time { return now }
	k := replyKey{source: "192.0.2.1:5060", branch: "z9hG4bKa", callID: "c1"}
	if _, fresh := c.claim(k); !fresh {
		t.Fatal("first copy not processed")
	}
	if data, fresh := c.claim(k); fresh || data != nil {
		t.Fatal("a copy that arrives while the first is processed is not dropped")
	}
	c.store(k, []byte("SIP/2.0 200 OK"))
	now = now.Add(5 * time.Second)
	if data, fresh := c.claim(k); fresh || string(data) != "SIP/2.0 200 OK" {
		t.Fatalf("retransmission: %q, %v; want the answer again", data, fresh)
	}
	// A stuck first copy lets a retransmission through after claimTTL.
	other := replyKey{source: "192.0.2.1:5060", branch: "z9hG4bKb", callID: "c1"}
	c.claim(other)
	now = now.Add(claimTTL)
	if _, fresh := c.claim(other); !fresh {
		t.Fatal("a copy is still dropped after claimTTL")
	}
	now = now.Add(replyTTL)
	c.sweep()
	for i := range c.slots {
		if c.slots[i].data != nil {
			t.Fatal("an answer older than replyTTL survives the sweep")
		}
	}
	if _, fresh := c.claim(k); !fresh {
		t.Fatal("a copy after replyTTL is not processed again")
	}
}
