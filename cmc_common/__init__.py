"""What every stage's command line shares and nothing else: the ``--help`` layout and the quick
offline check before a Hugging Face hub id is loaded. No stage depends on another through it."""
