package audit

import (
	"encoding/hex"
	"encoding/json"
	"time"
)

// Step is a step a record operation added.
type Step struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// Peer is who was at the other end: a Unix socket peer's credentials, or a TCP peer's
// address.
type Peer struct {
	Unix          bool
	UID, GID, PID int
	Addr          string
}

// MarshalJSON writes a socket peer as {"uid","gid","pid"} and a TCP peer as its address.
func (p Peer) MarshalJSON() ([]byte, error) {
	if p.Unix {
		return json.Marshal(struct {
			UID int `json:"uid"`
			GID int `json:"gid"`
			PID int `json:"pid"`
		}{p.UID, p.GID, p.PID})
	}
	return json.Marshal(p.Addr)
}

// Entry is what a line records about one operation. The log adds time, seq and prev.
type Entry struct {
	Client         *string // nil: no client recognised
	Peer           Peer
	Op, Route, Key string
	Status         int
	Digest         []byte   // a single signature's SHA-256 digest
	Digests        [][]byte // a batch's digests; nil items could not be read
	Steps          []Step
	CSR            *CSR // what a CSR request had signed
	// Count is how many requests a summary line stands for (refusals past the
	// peer's budget, written without a line each); 0 for a line about one request.
	Count     int
	RequestID string
	Reason    string // why a request was denied or failed, as the client was told
}

// CSR is what a certificate signing request carried: the subject and the names, as the
// client asked for them (or as the CSR it gave to copy them from had them).
type CSR struct {
	Subject string   `json:"subject"`
	URIs    []string `json:"uris,omitzero"`
	DNS     []string `json:"dns,omitzero"`
}

// Outcome is ok, denied (401, 403, 429) or error.
func (e *Entry) Outcome() string {
	switch {
	case e.Status < 300:
		return "ok"
	case e.Status == 401 || e.Status == 403 || e.Status == 429:
		return "denied"
	}
	return "error"
}

// hexBytes is a digest as hex; a nil one (a batch item that could not be read) is null.
type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) {
	if h == nil {
		return []byte("null"), nil
	}
	b := make([]byte, 0, 2+hex.EncodedLen(len(h)))
	b = append(b, '"')
	b = hex.AppendEncode(b, h)
	return append(b, '"'), nil
}

// line is an entry as written: the members in this order, "prev" last.
type line struct {
	Time      string     `json:"time"`
	Seq       uint64     `json:"seq"`
	Client    *string    `json:"client"`
	Peer      Peer       `json:"peer"`
	Op        string     `json:"op"`
	Route     string     `json:"route"`
	Key       *string    `json:"key"`
	Outcome   string     `json:"outcome"`
	Status    int        `json:"status"`
	Digest    hexBytes   `json:"digest,omitzero"`
	Digests   []hexBytes `json:"digests,omitzero"`
	Steps     []Step     `json:"steps,omitzero"`
	CSR       *CSR       `json:"csr,omitzero"`
	Count     int        `json:"count,omitzero"`
	Reason    string     `json:"reason,omitzero"`
	RequestID string     `json:"request_id,omitzero"`
	Prev      string     `json:"prev"`
}

// appendLine appends the entry's line, with its newline, to b.
func (e *Entry) appendLine(b []byte, t time.Time, seq uint64, prev []byte) []byte {
	l := line{
		Time: t.UTC().Format(time.RFC3339Nano), Seq: seq, Client: e.Client, Peer: e.Peer,
		Op: e.Op, Route: e.Route, Outcome: e.Outcome(), Status: e.Status,
		Digest: e.Digest, Steps: e.Steps, CSR: e.CSR, Count: e.Count, Reason: e.Reason, RequestID: e.RequestID,
		Prev: hex.EncodeToString(prev),
	}
	if e.Key != "" {
		l.Key = &e.Key
	}
	if e.Digests != nil {
		l.Digests = make([]hexBytes, len(e.Digests))
		for i, d := range e.Digests {
			l.Digests[i] = d
		}
	}
	out, err := json.Marshal(&l)
	if err != nil {
		// Every member is a string, a number or a byte slice: Marshal cannot fail.
		panic("audit: encoding a line: " + err.Error())
	}
	b = append(b, out...)
	return append(b, '\n')
}
