//go:build chaos

package main

// The misbehaving module, for the end-to-end tests only.
import _ "github.com/lineamica/centralino/modules/chaos"
