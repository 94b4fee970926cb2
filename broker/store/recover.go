package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// recover rebuilds the index from the files in the directory (Open, before
// the committer starts; it takes no lock).
func (s *Disk) recover() error {
	names, err := s.fs.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	var segNums, ackNums []uint64
	for _, name := range names {
		base, ext, ok := strings.Cut(name, ".")
		num, err := strconv.ParseUint(base, 10, 64)
		if !ok || err != nil || len(base) != 20 {
			continue
		}
		switch ext {
		case "seg":
			segNums = append(segNums, num)
		case "ack":
			ackNums = append(ackNums, num)
		}
	}
	slices.Sort(segNums)
	bySeg := map[uint64]*segment{}
	var maxID ID
	for i, num := range segNums {
		g, err := s.loadSegment(num, i == len(segNums)-1, maxID)
		if err != nil {
			return err
		}
		if g == nil {
			continue
		}
		if n := len(g.ents); n > 0 {
			if g.firstID <= maxID {
				return &CorruptError{File: g.path, Offset: fileHeaderSize,
					Err: fmt.Errorf("message id %d not above %d of the previous segment", g.firstID, maxID)}
			}
			maxID = g.firstID + ID(n) - 1
		}
		bySeg[num] = g
		s.segs = append(s.segs, g)
	}
	for _, num := range ackNums {
		g := bySeg[num]
		path := filepath.Join(s.cfg.Dir, fmt.Sprintf("%020d.ack", num))
		if g == nil { // its segment was removed just before a crash
			if err := s.fs.Remove(path); err != nil {
				return fmt.Errorf("store: %w", err)
			}
			continue
		}
		if m, err := s.loadAcks(g); err != nil {
			return err
		} else {
			maxID = max(maxID, m)
		}
	}
	s.nextID = maxID + 1
	var next uint64 = 1
	if len(segNums) > 0 {
		next = segNums[len(segNums)-1] + 1
	}
	// What was read may not be durable: after a process crash (not a
	// power loss) the page cache still holds bytes written but never
	// fsynced, and directory entries (a segment created just before the
	// crash, whose directory fsync never ran) that a later power loss
	// would drop. Everything recovered is treated as stored from now on
	// (queues rebuilt from it, messages delivered, a later segment
	// written after it), so make it durable before anything else: else
	// a power loss could lose a recovered message, or cut the tail of a
	// segment that is no longer the last, which the next Open calls
	// damage. This also makes recovery's own removals durable. On a
	// clean store these fsyncs find nothing to write.
	for _, g := range s.segs {
		if err := s.sync(g.f); err != nil {
			return fmt.Errorf("store: sync %s: %w", g.path, err)
		}
		if g.ackf != nil {
			if err := s.sync(g.ackf); err != nil {
				return fmt.Errorf("store: sync %s: %w", g.ackPath(), err)
			}
		}
	}
	if len(segNums)+len(ackNums) > 0 {
		if err := s.sync(s.dirf); err != nil {
			return fmt.Errorf("store: sync %s: %w", s.cfg.Dir, err)
		}
	}
	for _, g := range slices.Clone(s.segs) {
		g.sealed = true
		s.live += g.live
		if g.live == 0 {
			s.deadLocked(g) // removed by the first commit cycle
		}
	}
	s.tail = &segment{num: next, path: s.segPath(next), firstID: s.nextID}
	s.segs = append(s.segs, s.tail)
	return nil
}

// loadSegment reads one segment file. In the last segment a bad record
// that no later write follows is a torn tail: the file is truncated there.
func (s *Disk) loadSegment(num uint64, last bool, prevMax ID) (*segment, error) {
	path := s.segPath(num)
	data, err := s.fs.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if len(data) < fileHeaderSize || !bytes.Equal(data[:fileHeaderSize], segMagic[:]) {
		// The header goes out with the segment's first write: if no later
		// write follows, that write was torn and nothing in it confirmed.
		if last && !laterWrite(data, fileHeaderSize, prevMax) { // the record at 8 is that same write
			s.log.Warn("store: removing a segment whose first write was torn", "file", path, "size", len(data))
			return nil, s.fs.Remove(path)
		}
		return nil, &CorruptError{File: path, Offset: 0, Err: errors.New("bad file header")}
	}
	g := &segment{num: num, path: path}
	off := fileHeaderSize
	for off < len(data) {
		typ, p, n, err := decodeRecord(data[off:])
		if err == nil && typ&typeMask != typeMessage {
			err = errType
		}
		var id ID
		var m *Message
		if err == nil {
			id, m, err = decodeMessage(p, false)
		}
		if err == nil && len(g.ents) > 0 && id != g.firstID+ID(len(g.ents)) {
			err = fmt.Errorf("message id %d out of sequence", id)
		}
		if err != nil {
			lastID := prevMax
			if len(g.ents) > 0 {
				lastID = g.firstID + ID(len(g.ents)) - 1
			}
			if !last || laterWrite(data, off, lastID) {
				return nil, &CorruptError{File: path, Offset: int64(off), Err: err}
			}
			s.log.Warn("store: truncating a torn tail", "file", path, "offset", off, "size", len(data), "err", err)
			if err := truncate(s.fs, path, int64(off)); err != nil {
				return nil, err
			}
			data = data[:off]
			break
		}
		if len(g.ents) == 0 {
			g.firstID = id
		}
		var fl uint8
		if m.Redelivered {
			fl = eRedelivered
		}
		g.ents = append(g.ents, entry{off: uint32(off), size: uint32(n), queue: s.queueLocked(m.Queue),
			deliveries: m.Deliveries, flags: fl})
		off += n
	}
	g.live = len(g.ents)
	g.size, g.written = int64(len(data)), int64(len(data))
	if g.f, err = s.fs.OpenFile(path, os.O_RDWR); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return g, nil
}

// laterWrite reports whether a valid first record of a later write (a
// message record flagged flagBatch, with an ID above lastID) starts after
// off. If one does, the bad record at off had been synced before that
// write began: it is damage, not a torn tail.
func laterWrite(data []byte, off int, lastID ID) bool {
	for p := off + 1; p+headerSize+msgFixed <= len(data); p++ {
		if data[p+8] != typeMessage|flagBatch {
			continue
		}
		l := int(binary.LittleEndian.Uint32(data[p+4:]))
		id := ID(binary.LittleEndian.Uint64(data[p+headerSize:]))
		if l < msgFixed || l > len(data)-p-headerSize || id <= lastID || id > lastID+ID(len(data)) {
			continue
		}
		if crc32.Checksum(data[p+4:p+headerSize+l], castagnoli) == binary.LittleEndian.Uint32(data[p:]) {
			return true
		}
	}
	return false
}

// loadAcks applies g's ack file. Its records are written after the
// messages they name are synced, and losing one only brings a message
// back (at-least-once), so a bad record ends the file wherever it is: the
// file is truncated there. It returns the largest ID named.
func (s *Disk) loadAcks(g *segment) (ID, error) {
	path := g.ackPath()
	data, err := s.fs.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	var maxID ID
	off := 0
	if len(data) >= fileHeaderSize && bytes.Equal(data[:fileHeaderSize], ackMagic[:]) {
		off = fileHeaderSize
		for off < len(data) {
			typ, p, n, err := decodeRecord(data[off:])
			var ids []ID
			if err == nil {
				ids, err = decodeIDs(p)
			}
			if err == nil && typ&typeMask == typeMessage {
				err = errType
			}
			if err != nil {
				s.log.Warn("store: truncating an ack file", "file", path, "offset", off, "err", err)
				break
			}
			for _, id := range ids {
				maxID = max(maxID, id)
				k := uint64(id - g.firstID)
				if id < g.firstID || k >= uint64(len(g.ents)) {
					continue // its message was a torn tail
				}
				e := &g.ents[k]
				switch typ & typeMask {
				case typeAck:
					if e.flags&eAcked == 0 {
						e.flags |= eAcked
						g.live--
					}
				case typeDelivered:
					e.flags |= eRedelivered
					e.deliveries++
				}
			}
			off += n
		}
	}
	if off < fileHeaderSize {
		off = 0 // header torn: start the file again
	}
	if off < len(data) {
		if err := truncate(s.fs, path, int64(off)); err != nil {
			return 0, err
		}
	}
	if off > 0 {
		if g.ackf, err = s.fs.OpenFile(path, os.O_RDWR); err != nil {
			return 0, fmt.Errorf("store: %w", err)
		}
		g.ackSize = int64(off)
	} else if err := s.fs.Remove(path); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return maxID, nil
}
