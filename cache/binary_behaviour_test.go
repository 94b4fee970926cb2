package cache

import (
	"strings"
	"testing"
)

// binTranscripts are binary request/reply exchanges checked byte for byte
// (CAS values included). Each runs against a fresh server, so CAS values
// start at 1, and every one also runs against Debian's memcached 1.6.18.
var binTranscripts = []struct {
	name      string
	req, want string
	closes    bool // the server closes the connection after want
}{
	{name: "set get",
		req: binReq(BinSet, "k", setExtras(5, 0), "abc", 1, 0) + binReq(BinGet, "k", "", "", 2, 0),
		want: binRes(BinSet, 0, "", "", "", 1, 1) +
			binRes(BinGet, 0, u32(5), "", "abc", 2, 1)},
	{name: "get miss",
		req:  binReq(BinGet, "nope", "", "", 7, 0),
		want: binErr(BinGet, BinStatusKeyNotFound, 7)},
	{name: "getk hit and miss",
		req: binReq(BinSet, "k", setExtras(0, 0), "v", 0, 0) + binReq(BinGetK, "k", "", "", 1, 0) + binReq(BinGetK, "nope", "", "", 2, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinGetK, 0, u32(0), "k", "v", 1, 1) +
			binRes(BinGetK, BinStatusKeyNotFound, "", "nope", "", 2, 0)},
	{name: "quiet gets (bmemcached get_multi)",
		req: binReq(BinSetQ, "a", setExtras(1, 0), "A", 0, 0) + binReq(BinSetQ, "b", setExtras(2, 0), "BB", 0, 0) +
			binReq(BinGetKQ, "a", "", "", 0, 0) + binReq(BinGetKQ, "x", "", "", 0, 0) + binReq(BinGetQ, "b", "", "", 3, 0) +
			binReq(BinGetQ, "y", "", "", 0, 0) + binReq(BinGetK, "b", "", "", 4, 0),
		want: binRes(BinGetKQ, 0, u32(1), "a", "A", 0, 1) + binRes(BinGetQ, 0, u32(2), "", "BB", 3, 2) +
			binRes(BinGetK, 0, u32(2), "b", "BB", 4, 2)},
	{name: "add replace",
		req: binReq(BinAdd, "k", setExtras(0, 0), "1", 0, 0) + binReq(BinAdd, "k", setExtras(0, 0), "2", 1, 0) +
			binReq(BinAddQ, "k", setExtras(0, 0), "2", 2, 0) + binReq(BinReplace, "nope", setExtras(0, 0), "3", 3, 0) +
			binReq(BinReplaceQ, "k", setExtras(0, 0), "4", 4, 0) + binReq(BinGet, "k", "", "", 5, 0),
		want: binRes(BinAdd, 0, "", "", "", 0, 1) + binErr(BinAdd, BinStatusKeyExists, 1) + binErr(BinAddQ, BinStatusKeyExists, 2) +
			binErr(BinReplace, BinStatusKeyNotFound, 3) + binRes(BinGet, 0, u32(0), "", "4", 5, 2)},
	{name: "cas",
		req: binReq(BinSet, "k", setExtras(0, 0), "1", 0, 0) + binReq(BinSet, "k", setExtras(0, 0), "2", 1, 99) +
			binReq(BinSet, "nope", setExtras(0, 0), "2", 2, 1) + binReq(BinSet, "k", setExtras(0, 0), "3", 3, 1) +
			binReq(BinAdd, "k", setExtras(0, 0), "4", 4, 2) + binReq(BinReplace, "k", setExtras(0, 0), "5", 5, 7),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binErr(BinSet, BinStatusKeyExists, 1) + binErr(BinSet, BinStatusKeyNotFound, 2) +
			binRes(BinSet, 0, "", "", "", 3, 2) + binRes(BinAdd, 0, "", "", "", 4, 3) + binErr(BinReplace, BinStatusKeyExists, 5)},
	{name: "delete",
		req: binReq(BinSet, "k", setExtras(0, 0), "1", 0, 0) + binReq(BinDelete, "k", "", "", 1, 5) + binReq(BinDelete, "k", "", "", 2, 1) +
			binReq(BinDelete, "k", "", "", 3, 0) + binReq(BinDeleteQ, "k", "", "", 4, 0) +
			binReq(BinSet, "k", setExtras(0, 0), "1", 0, 0) + binReq(BinDeleteQ, "k", "", "", 5, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binErr(BinDelete, BinStatusKeyExists, 1) + binRes(BinDelete, 0, "", "", "", 2, 0) +
			binErr(BinDelete, BinStatusKeyNotFound, 3) + binErr(BinDeleteQ, BinStatusKeyNotFound, 4) +
			binRes(BinSet, 0, "", "", "", 0, 2)},
	{name: "incr decr",
		req: binReq(BinIncrement, "n", arithExtras(1, 10, 0), "", 1, 0) + binReq(BinIncrement, "n", arithExtras(5, 0, 0), "", 2, 0) +
			binReq(BinDecrement, "n", arithExtras(100, 0, 0), "", 3, 0) + binReq(BinIncrement, "m", arithExtras(1, 0, binNoCreate), "", 4, 0) +
			binReq(BinDecrementQ, "n", arithExtras(1, 0, 0), "", 5, 0) + binReq(BinIncrementQ, "m", arithExtras(1, 0, binNoCreate), "", 6, 0) +
			binReq(BinSet, "s", setExtras(0, 0), "hi", 0, 0) + binReq(BinIncrement, "s", arithExtras(1, 0, 0), "", 7, 0) +
			binReq(BinIncrement, "n", arithExtras(1, 0, 0), "", 8, 99) + binReq(BinGet, "n", "", "", 9, 0),
		want: binRes(BinIncrement, 0, "", "", u64(10), 1, 1) + binRes(BinIncrement, 0, "", "", u64(15), 2, 2) +
			binRes(BinDecrement, 0, "", "", u64(0), 3, 3) + binErr(BinIncrement, BinStatusKeyNotFound, 4) +
			binErr(BinIncrementQ, BinStatusKeyNotFound, 6) + binRes(BinSet, 0, "", "", "", 0, 5) +
			binErr(BinIncrement, BinStatusNonNumeric, 7) + binErr(BinIncrement, BinStatusKeyExists, 8) +
			binRes(BinGet, 0, u32(0), "", "0 ", 9, 4)},
	{name: "append prepend",
		req: binReq(BinAppend, "k", "", "x", 1, 0) + binReq(BinSet, "k", setExtras(3, 0), "b", 0, 0) +
			binReq(BinAppend, "k", "", "c", 2, 0) + binReq(BinPrependQ, "k", "", "a", 3, 0) + binReq(BinAppend, "k", "", "d", 4, 9) +
			binReq(BinGet, "k", "", "", 5, 0),
		want: binErr(BinAppend, BinStatusNotStored, 1) + binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinAppend, 0, "", "", "", 2, 2) +
			binErr(BinAppend, BinStatusKeyExists, 4) + binRes(BinGet, 0, u32(3), "", "abc", 5, 3)},
	{name: "touch gat",
		req: binReq(BinSet, "k", setExtras(9, 0), "v", 0, 0) + binReq(BinTouch, "k", u32(100), "", 1, 0) + binReq(BinTouch, "nope", u32(100), "", 2, 0) +
			binReq(BinGAT, "k", u32(100), "", 3, 0) + binReq(BinGATK, "k", u32(0), "", 4, 0) + binReq(BinGATQ, "nope", u32(1), "", 5, 0) +
			binReq(BinGATKQ, "k", u32(0xfffffffe), "", 6, 0) + binReq(BinGet, "k", "", "", 7, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinTouch, 0, u32(9), "", "", 1, 1) + binErr(BinTouch, BinStatusKeyNotFound, 2) +
			binRes(BinGAT, 0, u32(9), "", "v", 3, 1) + binRes(BinGATK, 0, u32(9), "k", "v", 4, 1) + binRes(BinGATKQ, 0, u32(9), "k", "v", 6, 1) +
			binRes(BinGet, 0, u32(9), "", "v", 7, 1)},
	{name: "negative time from bmemcached is far future",
		req:  binReq(BinSet, "k", setExtras(0, 0xfffffffe), "v", 0, 0) + binReq(BinGet, "k", "", "", 1, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinGet, 0, u32(0), "", "v", 1, 1)},
	{name: "flush",
		req: binReq(BinSet, "k", setExtras(0, 0), "v", 0, 0) + binReq(BinFlush, "", "", "", 1, 0) + binReq(BinGet, "k", "", "", 2, 0) +
			binReq(BinFlushQ, "", u32(0), "", 3, 0) + binReq(BinFlush, "", u32(0), "", 4, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinFlush, 0, "", "", "", 1, 0) + binErr(BinGet, BinStatusKeyNotFound, 2) +
			binRes(BinFlush, 0, "", "", "", 4, 0)},
	{name: "version noop",
		req:  binReq(BinVersion, "", "", "", 1, 0) + binReq(BinNoop, "", "", "", 2, 0),
		want: binRes(BinVersion, 0, "", "", "1.6.18", 1, 0) + binRes(BinNoop, 0, "", "", "", 2, 0)},
	{name: "empty value and binary key",
		req:  binReq(BinSet, "k\x00\r\n y", setExtras(0, 0), "", 0, 0) + binReq(BinGetK, "k\x00\r\n y", "", "", 1, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binRes(BinGetK, 0, u32(0), "k\x00\r\n y", "", 1, 1)},
	{name: "too large deletes set",
		req: binReq(BinSet, "k", setExtras(0, 0), "v", 0, 0) + binReq(BinSet, "k", setExtras(0, 0), strings.Repeat("z", 1<<20), 1, 0) +
			binReq(BinGet, "k", "", "", 2, 0) + binReq(BinAppend, "k", "", strings.Repeat("z", 1<<20), 3, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binErr(BinSet, BinStatusTooLarge, 1) + binErr(BinGet, BinStatusKeyNotFound, 2) +
			binErr(BinAppend, BinStatusTooLarge, 3)},
	{name: "largest value",
		req:  binReq(BinSet, "kk", setExtras(0, 0), strings.Repeat("z", 1048515), 0, 0) + binReq(BinSet, "kk", setExtras(1, 0), strings.Repeat("z", 1048515), 1, 0),
		want: binRes(BinSet, 0, "", "", "", 0, 1) + binErr(BinSet, BinStatusTooLarge, 1)},
	{name: "unknown opcode swallows body after key",
		// memcached swallows bodylen bytes after header+extras+key, so the
		// three bytes of the key eat the start of the next request... the
		// padding "xyz" here.
		req:  binReq(0x1b, "abc", "", "", 1, 0) + "xyz",
		want: binErr(0x1b, BinStatusUnknownCommand, 1)},
	{name: "unknown opcode with value",
		req:  binReq(0x40, "", "", "hello", 1, 0),
		want: binErr(0x40, BinStatusUnknownCommand, 1)},
	{name: "sasl when disabled",
		req: binReq(BinSASLListMechs, "", "", "", 1, 0) + binReq(BinSASLAuth, "PLAIN", "", "\x00u\x00p", 2, 0) +
			binReq(BinSASLStep, "PLAIN", "", "", 3, 0),
		want: binErr(BinSASLListMechs, BinStatusUnknownCommand, 1) + binErr(BinSASLAuth, BinStatusUnknownCommand, 2) +
			binErr(BinSASLStep, BinStatusUnknownCommand, 3)},
	{name: "stat errors",
		req: binReq(BinStat, "bogus", "", "", 1, 0) + binReq(BinStat, "detail", "", "", 2, 0) + binReq(BinStat, "conns", "", "", 3, 0) +
			binReq(BinStat, "reset", "", "", 4, 0) + binReq(BinStat, "detail on", "", "", 5, 0) + binReq(BinStat, "sizes", "", "", 6, 0),
		want: binErr(BinStat, BinStatusKeyNotFound, 1) + binErr(BinStat, BinStatusKeyNotFound, 2) + binErr(BinStat, BinStatusKeyNotFound, 3) +
			binRes(BinStat, 0, "", "", "", 4, 0) + binRes(BinStat, 0, "", "", "", 5, 0) +
			binRes(BinStat, 0, "", "sizes_status", "disabled", 6, 0) + binRes(BinStat, 0, "", "", "", 6, 0)},
	{name: "stat detail dump and prefixes",
		req: binReq(BinStat, "detail dump", "", "", 1, 0) + binReq(BinStat, "detail offx", "", "", 2, 0) +
			binReq(BinStat, "resetting", "", "", 3, 0) + binReq(BinStat, "itemsx", "", "", 4, 0),
		want: binRes(BinStat, 0, "", "detailed", "END\r\n", 1, 0) + binRes(BinStat, 0, "", "", "", 1, 0) +
			binRes(BinStat, 0, "", "", "", 2, 0) + binRes(BinStat, 0, "", "", "", 3, 0) + binErr(BinStat, BinStatusKeyNotFound, 4)},
	{name: "stat ignores rest of body",
		// STAT checks only the extras: a body longer than the key is left
		// to be parsed as the next request.
		req:  binReq(BinStat, "reset", "", binReq(BinVersion, "", "", "", 9, 0), 1, 0),
		want: binRes(BinStat, 0, "", "", "", 1, 0) + binRes(BinVersion, 0, "", "", "1.6.18", 9, 0)},
	{name: "quit", closes: true,
		req:  binReq(BinQuit, "", "", "", 1, 0) + binReq(BinNoop, "", "", "", 2, 0),
		want: binRes(BinQuit, 0, "", "", "", 1, 0)},
	{name: "quitq", closes: true,
		req:  binReq(BinVersion, "", "", "", 1, 0) + binReq(BinQuitQ, "", "", "", 2, 0),
		want: binRes(BinVersion, 0, "", "", "1.6.18", 1, 0)},
	{name: "key too long", closes: true,
		req:  binReq(BinVersion, "", "", "", 1, 0) + binReq(BinGet, strings.Repeat("k", 251), "", "", 2, 0) + binNoopReq,
		want: binRes(BinVersion, 0, "", "", "1.6.18", 1, 0) + binErr(BinGet, BinStatusInvalid, 2)},
	{name: "16360 byte key", closes: true,
		req:  binReq(BinGet, strings.Repeat("k", 16360), "", "", 2, 0),
		want: binErr(BinGet, BinStatusInvalid, 2)},
	{name: "unknown opcode with long key", closes: true,
		req:  binReq(0x50, strings.Repeat("k", 251), "", "", 2, 0),
		want: binErr(0x50, BinStatusInvalid, 2)},
	{name: "get with extras", closes: true,
		req:  binReq(BinGet, "k", "abcd", "", 2, 0),
		want: binErr(BinGet, BinStatusInvalid, 2)},
	{name: "set without extras", closes: true,
		req:  binReq(BinSet, "k", "", "v", 2, 0),
		want: binErr(BinSet, BinStatusInvalid, 2)},
	{name: "incr short extras", closes: true,
		req:  binReq(BinIncrement, "k", u64(1), "", 2, 0),
		want: binErr(BinIncrement, BinStatusInvalid, 2)},
	{name: "noop with body", closes: true,
		req:  binReq(BinNoop, "", "", "x", 2, 0),
		want: binErr(BinNoop, BinStatusInvalid, 2)},
	{name: "keylen beyond body", closes: true,
		req:  "\x80\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x03" + u64(0) + "abcde",
		want: binErr(BinGet, BinStatusUnknownCommand, 3)},
	{name: "bad magic after noop", closes: true,
		req:  binReq(BinNoop, "", "", "", 1, 0) + "get foo\r\n" + strings.Repeat(" ", 20),
		want: binRes(BinNoop, 0, "", "", "", 1, 0)},
	{name: "bad magic after version drops its reply", closes: true,
		req:  binReq(BinVersion, "", "", "", 1, 0) + "get foo\r\n" + strings.Repeat(" ", 20),
		want: ""},
	{name: "sasl list mechs with body", closes: true,
		req:  binReq(BinSASLListMechs, "", "", "x", 1, 0),
		want: binErr(BinSASLListMechs, BinStatusInvalid, 1)},
}

func TestBinaryTranscripts(t *testing.T) {
	for _, tc := range binTranscripts {
		t.Run(tc.name, func(t *testing.T) {
			forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
				c := dial(t, addr)
				var got string
				if tc.closes {
					c.send(tc.req)
					got = c.expectEOF()
				} else {
					got = c.binRoundTrip(tc.req)
				}
				if got != tc.want {
					t.Errorf("reply mismatch\n got: %v\nwant: %v", parseBinResps(t, got), parseBinResps(t, tc.want))
				}
			})
		})
	}
}
