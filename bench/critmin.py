#!/usr/bin/env python3
# critmin.py <criterion dir> [regex]: min and p10 of per-iteration time over the raw samples of each bench.
import json, os, re, sys
root = sys.argv[1]; pat = re.compile(sys.argv[2] if len(sys.argv) > 2 else '.')
for dp, dn, fn in os.walk(root):
    if dp.endswith('/new') and 'sample.json' in fn:
        name = os.path.relpath(os.path.dirname(dp), root)
        if not pat.search(name): continue
        s = json.load(open(os.path.join(dp, 'sample.json')))
        per = sorted(t / i for t, i in zip(s['times'], s['iters']))
        print(f"{name}\t{per[0]:.1f}\t{per[len(per)//10]:.1f}")
