"""Generation by iterative unmasking (its settings: `cdt.settings.SampleConfig`).

    policies.py  remasking policies, registered by name
    loop.py      `generate`: the unmasking loop
    template.py  prompt and held-out templates (protected text + a masked region)
    heldout.py   held-out rows to infill and grade
    infill.py    the held-out infill loop that eval and calibrate share
    run.py       `cdt sample` as a library call
    evaluate.py  `cdt eval` as a library call
"""
