package raftnode

import (
	"crypto/rand"
	"encoding/binary"
)

// An entry's data is an envelope: version, proposer's node ID, proposer's
// sequence number, then the StateMachine's data. The sequence starts at a
// random value in each process, so an entry replayed from an earlier
// process's proposal never matches a pending one of this process.
const (
	envelopeV1  = 1
	envelopeLen = 1 + 8 + 8
)

func encodeEnvelope(node, seq uint64, data []byte) []byte {
	b := make([]byte, envelopeLen+len(data))
	b[0] = envelopeV1
	binary.BigEndian.PutUint64(b[1:], node)
	binary.BigEndian.PutUint64(b[9:], seq)
	copy(b[envelopeLen:], data)
	return b
}

func decodeEnvelope(b []byte) (node, seq uint64, data []byte, ok bool) {
	if len(b) < envelopeLen || b[0] != envelopeV1 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:]), b[envelopeLen:], true
}

// randomSeq is where this process's proposal sequence starts.
func randomSeq() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand's documented contract)
	return binary.BigEndian.Uint64(b[:])
}
