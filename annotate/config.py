"""Default configuration; override any of it in ``instance/config.py`` (a Python file).

Times are in minutes unless the name says otherwise.
"""

# Storage: a SQLAlchemy URL or a SQLite path; empty = instance/ratings.db
DATABASE = ""

# Study design (ITU-R BT.500 / CMC-Bench A.2)
GROUP_SIZE = 400  # stimuli per group = per sitting
VIEWERS_PER_STIMULUS = 20  # target: each group is rated by this many viewers
WARMUP_TRIALS = 3  # stabilizing trials at the start of every sitting (stored, flagged, not in MOS)
REPEAT_TRIALS = 0  # repeated items per sitting, to measure each viewer's self-consistency
SESSION_LIMIT_MINUTES = 60  # a sitting is closed after this long
BREAK_AFTER_MINUTES = 30  # an enforced rest after this much viewing
BREAK_MINUTES = 3  # how long the rest lasts
GREY_SCREEN_MS = 600  # mid-grey screen between two trials
MIN_VIEWING_MS = (
    1000  # a rating is refused sooner than GREY_SCREEN_MS + this after its page was served
)
SITTING_IDLE_MINUTES = 20  # an open sitting with no activity this long is closed as abandoned
# How a pair wider than the window is shown: "native" = 1:1 pixels, rating blocked until the pair
# fits (the paper's iMac up to 4096×2304); "scaled" = both images scaled down by one common factor,
# stored with each rating.
PRESENTATION = "native"
SEED = None  # seed of the per-viewer orders; None = fresh randomness

CONSENT_TEXT = (
    "You are invited to take part in a study of image quality. You will see pairs of images and "
    "rate them. The study takes at most one hour, with a break after about 30 minutes. Your "
    "ratings are stored under a pseudonymous code; no name or e-mail is recorded. Some images "
    "are produced by generative models and could, rarely, be unpleasant: you can flag any image "
    "as offensive, and you may stop at any time without giving a reason. Your data will be used "
    "for research, in accordance with the Declaration of Helsinki."
)
# Manifest ids shown in practice, worst to best; they are never test items. [] = practice pairs
# made from one of the study's references at five levels of JPEG damage (not test stimuli either).
TRAINING_STIMULI: list[str] = []

# Admin: the password hash lives in instance/admin_password_hash (python -m annotate set-password)
ADMIN_PASSWORD_HASH = None

# Cookies: Secure follows the scheme (None); True forces HTTPS-only cookies, False never sets it
SESSION_COOKIE_SECURE = None
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
WTF_CSRF_TIME_LIMIT = None  # a token lasts the whole sitting
MAX_CONTENT_LENGTH = 64 * 1024  # forms only: nothing big is ever uploaded

# Admin security (docs/annotate.md "Security", docs/deployment.md)
ADMIN_LOGIN_LIMIT = "5 per 15 minutes"  # failed admin logins per client address, then 429
ADMIN_SESSION_MINUTES = 8 * 60  # an admin login lasts a working day at most

# Live screening on the admin dashboard (leave-one-out SRoCC, in the background)
SCREENING_THRESHOLD = 0.6  # the paper's SRoCC threshold
SCREENING_CONFIDENCE = 0.95  # a viewer is flagged once this interval lies below the threshold
SCREENING_REFRESH_SECONDS = 30  # recompute at most this often while ratings arrive
FILE_CHECK_SECONDS = (
    60  # the dashboard's missing-file list is re-checked (in the background) this often
)
SCREENING_WAIT_SECONDS = 0.1  # a dashboard load waits this long for a fresh result, no longer

# Online studies (docs/annotate.md, "Online studies"): crowd participants by a platform's link
ONLINE = False  # True: the entry link /online/start replaces the lab's consent/registration pages
ONLINE_SITTING_PAIRS = 56  # test pairs per sitting (+ warm-ups + gold + attention = its pages)
ONLINE_GOLD_TRIALS = 2  # alternately a reference against itself and a strongly degraded pair
ONLINE_ATTENTION_CHECKS = 2  # pages that ask for a given consistency score
ONLINE_SITTINGS_PER_PARTICIPANT = 1  # a participant id cannot take a sitting twice
ONLINE_DECISION_SECONDS = 4  # typical time to set both sliders once a pair is seen (length shown)
# The online consent: {length} becomes the sitting's real length, computed from the settings
# above (practice, warm-ups, pairs and checks; minutes; when it closes)
ONLINE_CONSENT_TEXT = (
    "You are invited to take part in a study of image quality. You will see pairs of images and "
    "rate them. {length} Your ratings are stored under your recruitment platform's "
    "pseudonymous id; no name or e-mail is recorded. Some images are produced by generative "
    "models and could, rarely, be unpleasant: you can flag any image as offensive, and you may "
    "stop at any time without giving a reason (return the study on your platform). Some pages "
    "check attention: follow any instruction written in an image. Your data will be used for "
    "research, in accordance with the Declaration of Helsinki."
)
ONLINE_ENTRY_LIMIT = "30 per minute"  # entry-link visits per client address, then 429
# The platform's completion code per outcome (docs/annotate.md, "Honest pay"): "paid" after a
# completed sitting whose checks passed, "failed_checks" after one whose gold trials, attention
# checks, timing or slider use broke QC_RULES ("" = no code: the participant is asked to return
# the study). Codes differ; letters, digits, _ and - only; checked at start-up.
COMPLETION_CODES: dict = {"paid": "", "failed_checks": ""}
# Participant ids: folded to one case per platform whose ids are case-insensitive, and optionally
# checked against a full-match pattern per platform (e.g. {"prolific": r"[0-9a-f]{24}"}; once set,
# only the platforms it names can enter)
ONLINE_ID_CASE: dict = {"prolific": "lower", "mturk": "upper"}
ONLINE_ID_PATTERNS: dict = {}
# where a completed participant is sent; {code} is replaced ("" = show the code, no redirect);
# an absolute http(s) address with no other placeholder, checked at start-up
COMPLETION_URL = ""  # e.g. "https://app.prolific.com/submissions/complete?cc={code}"
ALLOCATION = "adaptive"  # "adaptive" (widest CIs first) or "uniform" (fewest ratings first)
ALLOCATION_MIN_RATINGS = 5  # every image gets this many kept ratings before any gets more
ALLOCATION_TARGET_CI = 0.4  # an image whose 95% CI half-width is this narrow needs no more
ONLINE_CLOSE_WHEN_DONE = True  # no new sitting once every image is on target (stop paying)
QC_RULES: dict = {}  # overrides of mos.qc.ExclusionRules, e.g. {"min_agreement": 0.2}
# The display check's minimum window follows the study's largest pair under PRESENTATION
# (docs/annotate.md, "Display check"); this adds a floor in device pixels, e.g. (1280, 720)
DISPLAY_MIN_WINDOW = None
DISPLAY_MIN_SCALE = 0.5  # PRESENTATION = "scaled": the largest pair must fit at this scale or more
DISPLAY_DPR_RANGE = (1.0, 3.0)  # device pixel ratios accepted
DISPLAY_CONTRAST = 12  # grey levels between the contrast test's digits and background
