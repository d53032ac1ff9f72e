package main

import _ "github.com/lineamica/centralino/modules/sla"
