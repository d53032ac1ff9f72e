#!/bin/sh
# Regenerates the survey's prompts: Italian speech from Debian's espeak-ng,
# converted by sox to raw G.711 µ-law, 8 kHz mono (what the IVR streams;
# A-law is derived at load time). Run from this folder:
#   apt-get install espeak-ng sox && ./generate.sh
set -eu
say() {
	espeak-ng -v it -s 145 -w "$1.wav" "$2"
	sox "$1.wav" -r 8000 -c 1 -e u-law -t raw "$1.ulaw"
	rm "$1.wav"
}
say question "Grazie per aver chiamato. Per valutare il servizio, premi 1 se sei soddisfatto, 2 se abbastanza soddisfatto, 3 se non sei soddisfatto."
say reason "Ci dispiace. Ci aiuti a capire perché: premi 1 per i tempi di attesa, 2 per il servizio ricevuto, 3 se hai dovuto richiamare o tornare, 4 per altro."
say thanks "Grazie, la tua valutazione è stata registrata. Arrivederci."
say goodbye "Non abbiamo ricevuto una risposta valida. Grazie e arrivederci."
