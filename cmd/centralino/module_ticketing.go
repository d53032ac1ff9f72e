package main

// Each module the binary ships is linked by one file like this one.
import _ "github.com/lineamica/centralino/modules/ticketing"
