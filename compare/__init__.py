"""``compare``: score CMC runs and traditional-codec ladders, and report rate–quality curves.

The paper's section 4.4 (Figure 6, Table A1, Figure A4): any set of manifests (``generate run``'s
and the codec ladder's) scored with any list of metrics — consistency (full-reference) and
perception (no-reference, FID) — drawn as one rate–quality panel per metric, tabulated point by
point, and summarised by Bjøntegaard deltas of each CMC curve against each codec curve.
"""
