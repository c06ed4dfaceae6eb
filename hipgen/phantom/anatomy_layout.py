"""Where every bone of a ventrodorsal hip-extended view sits, in body units.

Body units: the inter-head distance is 1; ``u`` runs to the patient's left (image right when upright
and not mirrored), ``v`` runs caudally (down). The hip midpoint is (0, 0), the left femoral head
centre (0.5, 0). Outlines are given for the left side and mirrored for the right.

Proportions follow ../shared/reference/vd-hip-anatomy.md and canine anatomy texts: head radius
≈ 0.11, sacrum about as wide as the cranial pelvis between the ilia, iliac crests at the level of the
seventh lumbar vertebra, obturator foramina caudal and medial to the acetabula, ischial tuberosities
at the caudolateral corners, femora roughly parallel to the spine.
"""

from __future__ import annotations

# Ilium: body from the acetabulum running cranially, widening into the wing whose crest sits at
# the level of L7; its medial edge overlies the sacral wing (sacroiliac joint).
ILIUM = (
    (0.33, -0.06),
    (0.27, -0.38),
    (0.20, -0.78),
    (0.185, -1.10),
    (0.215, -1.30),
    (0.30, -1.40),
    (0.42, -1.36),
    (0.50, -1.22),
    (0.49, -1.02),
    (0.43, -0.72),
    (0.41, -0.44),
    (0.46, -0.20),
    (0.56, -0.08),
)

# Ischium and pubis: one plate from the pubic symphysis round to the ischial tuberosity and back
# along the ischial arch to the midline; the obturator foramen is cut out of it.
ISCHIOPUBIC = (
    (0.0, 0.23),
    (0.14, 0.18),
    (0.28, 0.13),
    (0.40, 0.11),
    (0.50, 0.14),
    (0.52, 0.30),
    (0.49, 0.46),
    (0.52, 0.62),
    (0.57, 0.74),
    (0.54, 0.83),
    (0.44, 0.84),
    (0.30, 0.76),
    (0.16, 0.67),
    (0.06, 0.63),
    (0.0, 0.62),
)  # the caudal border dips to a deep ischial arch at the midline
OBTURATOR_CENTER = (0.26, 0.42)
OBTURATOR_AXES = (0.13, 0.17)  # lateral, craniocaudal half-axes
OBTURATOR_TILT_DEG = -18.0
OBTURATOR_EGG = 0.18  # egg-shaped: this much wider at its caudal end
# Thick bars of the hemipelvis, drawn as tubes over the plates: (start, end, radius start, radius end)
PELVIC_BARS = (
    ((0.40, -0.10), (0.27, -0.72), 0.08, 0.06),  # body of the ilium
    ((0.38, 0.13), (0.04, 0.25), 0.05, 0.035),  # cranial pubic ramus, running caudomedially
    ((0.48, 0.17), (0.49, 0.66), 0.05, 0.045),  # body of the ischium
    ((0.02, 0.26), (0.02, 0.62), 0.025, 0.025),  # pelvic symphysis (half of it)
)

# Sacrum: three fused vertebrae between the ilia; cranial end meets L7.
SACRUM = ((-0.10, -0.60), (-0.23, -1.05), (-0.24, -1.24), (0.24, -1.24), (0.23, -1.05), (0.10, -0.60))
SACRAL_FORAMINA = ((0.085, -1.08), (0.075, -0.86))  # left-side pair of foramina (mirrored)
SACRUM_CRANIAL_V = -1.26

# Lumbar vertebrae cranial to the sacrum, caudal first (L7, L6, L5, ...).
LUMBAR_LENGTHS = (0.34, 0.40, 0.42, 0.42, 0.41, 0.40, 0.39)
LUMBAR_HALF_WIDTH = 0.105
DISC_GAP = 0.045

# Tail (caudal) vertebrae from the caudal end of the sacrum.
TAIL_START_V = -0.58
TAIL_LENGTHS = (0.17, 0.19, 0.20, 0.21, 0.21, 0.21, 0.20, 0.20, 0.19, 0.18, 0.17, 0.16, 0.15, 0.14)

# Femur (left; offsets from the head centre, before the shaft angle is applied).
NECK_END = (0.2, 0.15)  # where the neck meets the shaft, from the head centre
GREATER_TROCHANTER = (0.26, 0.03)
GREATER_TROCHANTER_AXES = (0.055, 0.12)
SHAFT_RADII = (0.09, 0.08, 0.068, 0.074, 0.1)  # proximal → distal, at fractions SHAFT_STATIONS
SHAFT_START = (0.21, 0.13)  # proximal end of the shaft axis, hidden in the trochanter mass
SHAFT_STATIONS = (0.0, 0.18, 0.5, 0.82, 1.0)

# Soft tissue: trunk half-width and depth along v (body units), thigh radii along the femur.
TRUNK_V = (-4.0, -1.6, -0.7, -0.1, 0.45, 0.85, 1.1)
TRUNK_HALF_WIDTH = (1.02, 1.0, 0.92, 0.98, 0.9, 0.7, 0.3)
TRUNK_DEPTH = (2.2, 2.1, 1.9, 1.8, 1.5, 1.0, 0.3)
THIGH_RADII = (0.52, 0.45, 0.27)  # at the hip, mid-femur, stifle
THIGH_DEPTH = 1.5  # thigh depth along the beam / its half-width
