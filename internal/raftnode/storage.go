package raftnode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func (n *Node) walDir() string  { return filepath.Join(n.cfg.Dir, "wal") }
func (n *Node) snapDir() string { return filepath.Join(n.cfg.Dir, "snap") }

// openStorage prepares n.storage, n.wal and n.snapshotter. On a restart it
// restores sm from the newest snapshot the WAL records and loads the WAL's
// entries after it into the MemoryStorage, from where raft hands the
// committed ones to the loop for Apply.
func (n *Node) openStorage() (restart bool, err error) {
	if err := os.MkdirAll(n.snapDir(), 0o750); err != nil {
		return false, fmt.Errorf("raftnode: %w", err)
	}
	n.snapshotter = snap.New(n.zl, n.snapDir())
	n.storage = raft.NewMemoryStorage()
	if !wal.Exist(n.walDir()) {
		if err := writeIdentity(n.cfg.Dir, identity{ID: n.cfg.ID, Joined: n.cfg.Join}); err != nil {
			return false, err
		}
		n.seedMembers(n.cfg.Join)
		w, err := wal.Create(n.zl, n.walDir(), nil)
		if err != nil {
			return false, fmt.Errorf("raftnode: create WAL: %w", err)
		}
		n.wal = w
		n.confState = &raftpb.ConfState{}
		return false, nil
	}

	id, joined, err := LocalID(n.cfg.Dir)
	if err != nil {
		return true, err
	}
	if id != 0 && id != n.cfg.ID {
		return true, fmt.Errorf("raftnode: %s holds the log of member %d, not %d", n.cfg.Dir, id, n.cfg.ID)
	}
	if id == 0 { // a log from before the record: the bootstrap's ID
		if err := writeIdentity(n.cfg.Dir, identity{ID: n.cfg.ID}); err != nil {
			return true, err
		}
	}
	n.seedMembers(joined)
	walSnaps, err := wal.ValidSnapshotEntries(n.zl, n.walDir())
	if err != nil {
		return true, fmt.Errorf("raftnode: read WAL snapshots: %w", err)
	}
	snapshot, err := n.snapshotter.LoadNewestAvailable(walSnaps)
	if err != nil && !errors.Is(err, snap.ErrNoSnapshot) {
		return true, fmt.Errorf("raftnode: load snapshot: %w", err)
	}
	ws := &walpb.Snapshot{Index: new(uint64(0)), Term: new(uint64(0))}
	if snapshot != nil {
		ws.Index, ws.Term = new(snapshot.GetMetadata().GetIndex()), new(snapshot.GetMetadata().GetTerm())
		ws.ConfState = snapshot.GetMetadata().GetConfState()
	}
	w, st, ents, err := n.readWAL(ws)
	if err != nil {
		return true, err
	}
	n.wal = w
	n.confState = &raftpb.ConfState{}
	if snapshot != nil {
		if err := n.storage.ApplySnapshot(snapshot); err != nil {
			w.Close()
			return true, fmt.Errorf("raftnode: apply snapshot: %w", err)
		}
		table, data, err := decodeSnap(snapshot.GetData())
		if err == nil {
			n.restoreTable(table)
			err = n.sm.Restore(data)
		}
		if err != nil {
			w.Close()
			return true, fmt.Errorf("raftnode: restore snapshot at %d: %w", snapshot.GetMetadata().GetIndex(), err)
		}
		md := snapshot.GetMetadata()
		n.applied, n.appliedTerm, n.snapIndex = md.GetIndex(), md.GetTerm(), md.GetIndex()
		n.confState = md.GetConfState()
	}
	if st != nil {
		if err := n.storage.SetHardState(st); err != nil {
			w.Close()
			return true, fmt.Errorf("raftnode: %w", err)
		}
	}
	if err := n.storage.Append(ents); err != nil {
		w.Close()
		return true, fmt.Errorf("raftnode: %w", err)
	}
	n.log.Info("raftnode: restarting from WAL", "snapshot_index", n.snapIndex,
		"entries", len(ents), "commit", st.GetCommit(), "term", st.GetTerm())
	return true, nil
}

// readWAL opens the WAL at ws and reads it; a torn last record (a crash
// mid-write) is repaired once, as etcd does.
func (n *Node) readWAL(ws *walpb.Snapshot) (*wal.WAL, *raftpb.HardState, []*raftpb.Entry, error) {
	for repaired := false; ; repaired = true {
		w, err := wal.Open(n.zl, n.walDir(), ws)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("raftnode: open WAL: %w", err)
		}
		_, st, ents, err := w.ReadAll()
		if err == nil {
			return w, st, ents, nil
		}
		w.Close()
		if repaired || !errors.Is(err, io.ErrUnexpectedEOF) || !wal.Repair(n.zl, n.walDir()) {
			return nil, nil, nil, fmt.Errorf("raftnode: read WAL: %w", err)
		}
		n.log.Warn("raftnode: repaired a torn WAL tail", "dir", n.walDir())
	}
}

// saveSnap makes snap durable: the snapshot file first, then the WAL's
// snapshot record (so every WAL record names a file that exists; etcd's
// order), then old WAL segments are released and old files purged.
func (n *Node) saveSnap(s *raftpb.Snapshot) error {
	md := s.GetMetadata()
	if err := n.snapshotter.SaveSnap(s); err != nil {
		return err
	}
	ws := &walpb.Snapshot{Index: new(md.GetIndex()), Term: new(md.GetTerm()), ConfState: md.GetConfState()}
	if err := n.wal.SaveSnapshot(ws); err != nil {
		return err
	}
	if err := n.wal.ReleaseLockTo(md.GetIndex()); err != nil {
		return err
	}
	n.purge(n.walDir(), ".wal", true)
	n.purge(n.snapDir(), ".snap", false)
	return nil
}

// purge removes all but the newest keepFiles files with suffix in dir.
// With locked, a file is removed only if its lock can be taken (the WAL
// keeps the segments it still needs locked), as etcd's purge does.
func (n *Node) purge(dir, suffix string, locked bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names) // both name formats sort oldest first
	for len(names) > keepFiles {
		p := filepath.Join(dir, names[0])
		names = names[1:]
		if locked {
			l, err := fileutil.TryLockFile(p, os.O_WRONLY, fileutil.PrivateFileMode)
			if err != nil {
				return // still in use, and so is every newer one
			}
			err = os.Remove(p)
			l.Close()
			if err != nil {
				n.log.Warn("raftnode: cannot remove old file", "path", p, "err", err)
				return
			}
			continue
		}
		if err := os.Remove(p); err != nil {
			n.log.Warn("raftnode: cannot remove old file", "path", p, "err", err)
			return
		}
	}
}
