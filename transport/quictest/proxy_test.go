package quictest

import "testing"

// longPacket builds a long-header packet of type typ (v1 numbering) with a
// payload of n bytes, its Length field as a 2-byte varint.
func longPacket(first byte, version uint32, n int) []byte {
	b := []byte{first, byte(version >> 24), byte(version >> 16), byte(version >> 8), byte(version),
		4, 1, 2, 3, 4, // destination connection ID
		0} // no source connection ID
	if first>>4&3 == 0 && version == 1 || first>>4&3 == 1 && version == 0x6b3343cf {
		b = append(b, 0) // Initial: empty token
	}
	b = append(b, 0x40|byte(n>>8), byte(n))
	return append(b, make([]byte, n)...)
}

func TestCarriesHandshake(t *testing.T) {
	initial := longPacket(0xc0, 1, 40)
	zeroRTT := longPacket(0xd0, 1, 30)
	handshake := longPacket(0xe0, 1, 50)
	short := append([]byte{0x40}, make([]byte, 30)...)
	cases := []struct {
		name string
		data []byte
		want bool
	}{
		{"initial", initial, false},
		{"0-rtt", zeroRTT, false},
		{"handshake", handshake, true},
		{"initial then handshake", append(append([]byte{}, initial...), handshake...), true},
		{"initial then 1-rtt", append(append([]byte{}, initial...), short...), false},
		{"1-rtt", short, false},
		{"v2 handshake", longPacket(0xf0, 0x6b3343cf, 20), true},
		{"v2 initial", longPacket(0xd0, 0x6b3343cf, 20), false},
		{"truncated", initial[:8], false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		if got := carriesHandshake(c.data); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzCarriesHandshake(f *testing.F) {
	f.Add(longPacket(0xc0, 1, 40))
	f.Add(append(longPacket(0xc0, 1, 40), longPacket(0xe0, 1, 10)...))
	f.Fuzz(func(t *testing.T, b []byte) { carriesHandshake(b) })
}
