#!/usr/bin/env python3
"""Tones for the softphone test: make a sine WAV, find the dominant frequency of a WAV.

    tone.py gen FILE FREQ SECONDS [RATE]   16-bit mono sine at -6 dBFS
    tone.py freq FILE [SKIP_S]             prints "FREQ_HZ RMS SECONDS PURITY" of the loudest part

Standard library only (no numpy/sox on the test machine). The dominant frequency is found
with the Goertzel algorithm on a 10 Hz grid from 100 Hz to 3900 Hz (telephone band), over
the one-second window with the most energy after SKIP_S seconds (default 0.5) that skips
ringback or the start of the stream. PURITY is the share of the window's energy at that
frequency (a clean tone through G.711 gives > 0.8).
"""
import math
import struct
import sys
import wave


def gen(path, freq, seconds, rate=8000):
    n = int(seconds * rate)
    amp = 16384
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(amp * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)))


def read(path):
    with wave.open(path, "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        data = w.readframes(n)
    if width != 2:
        raise SystemExit(f"{path}: {8 * width}-bit samples, want 16")
    samples = struct.unpack("<%dh" % (len(data) // 2), data)
    if ch > 1:
        samples = samples[::ch]
    return list(samples), rate


def goertzel_power(x, rate, f):
    k = 2 * math.cos(2 * math.pi * f / rate)
    s1 = s2 = 0.0
    for v in x:
        s0 = v + k * s1 - s2
        s2, s1 = s1, s0
    return s1 * s1 + s2 * s2 - k * s1 * s2


def freq(path, skip=0.5):
    x, rate = read(path)
    seconds = len(x) / rate
    x = x[int(skip * rate):]
    win = rate  # one second
    if len(x) < win // 4:
        print(f"0 0 {seconds:.2f} 0")
        return
    # loudest one-second window (step 0.25 s)
    best, best_e = 0, -1.0
    for start in range(0, max(1, len(x) - win + 1), win // 4):
        e = sum(v * v for v in x[start:start + win])
        if e > best_e:
            best, best_e = start, e
    w = x[best:best + win]
    n = len(w)
    rms = math.sqrt(best_e / n) if n else 0
    if rms < 50:  # silence (or comfort noise)
        print(f"0 {rms:.0f} {seconds:.2f} 0")
        return
    # Hann window, then a 10 Hz grid and a 1 Hz refinement around the peak
    w = [v * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))) for i, v in enumerate(w)]
    grid = range(100, 3901, 10)
    powers = [(goertzel_power(w, rate, f), f) for f in grid]
    _, f0 = max(powers)
    fine = [(goertzel_power(w, rate, f), f) for f in range(f0 - 10, f0 + 11)]
    p, f = max(fine)
    energy = sum(v * v for v in w)
    # energy of a pure sine at f in the Hann window: |X|^2 relates to (sum w)^2 * A^2 / 4;
    # purity = fraction of the windowed energy explained by that sine.
    wsum = sum(0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1)) for i in range(n))
    wsq = sum((0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))) ** 2 for i in range(n))
    amp2 = 4 * p / (wsum * wsum)
    purity = min(1.0, (amp2 / 2 * wsq) / energy) if energy else 0
    print(f"{f} {rms:.0f} {seconds:.2f} {purity:.2f}")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "gen":
        gen(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 8000)
    elif len(sys.argv) >= 3 and sys.argv[1] == "freq":
        freq(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.5)
    else:
        sys.exit(__doc__)
