//go:build race

package media

// raceEnabled: the race detector adds allocations of its own.
const raceEnabled = true
