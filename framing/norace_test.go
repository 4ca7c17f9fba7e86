//go:build !race

package framing

// raceEnabled is true under the race detector, which makes sync.Pool drop
// items at random: allocation counts are then meaningless.
const raceEnabled = false
