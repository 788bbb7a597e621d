#!/usr/bin/env python3
"""Input for bench/compare-wordcount.sh: MB mebibytes of text on stdout, lines of 12 words
drawn from a 60,000-word vocabulary of made-up ASCII words with Zipf-distributed frequencies
(as natural text has), some capitalised, with punctuation. The same SEED gives the same text.

  gen-text.py MB SEED > corpus.txt
"""
import random
import sys

mb, seed = float(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
letters = "etaoinshrdlcumwfgypbvkjxqz"
weights = [12.7,9.1,8.2,7.5,7.0,6.7,6.3,6.1,6.0,4.3,4.0,2.8,2.8,2.4,2.4,2.2,2.0,2.0,1.9,1.5,1.0,0.8,0.15,0.15,0.1,0.07]
vocab = set()
while len(vocab) < 60000:
    n = max(1, min(14, int(rng.gauss(6, 2.5))))
    vocab.add("".join(rng.choices(letters, weights, k=n)))
vocab = sorted(vocab)
rng.shuffle(vocab)
zipf = [1.0 / (i + 1) for i in range(len(vocab))]
target = int(mb * 1024 * 1024)
out = sys.stdout
written = 0
while written < target:
    words = rng.choices(vocab, zipf, k=4096)
    lines = []
    for i in range(0, len(words), 12):
        w = words[i:i+12]
        if w and rng.random() < 0.3: w[0] = w[0].capitalize()
        lines.append(" ".join(w) + (". " if rng.random() < 0.5 else ", ") + "\n")
    block = "".join(lines)
    out.write(block)
    written += len(block)
