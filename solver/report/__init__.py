"""What a plan means: its metrics, its validation, why nothing fits and what would (explanations, remedies), and plots."""
