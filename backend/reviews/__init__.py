"""Reviews: ratings by users with a confirmed booking, and the tour's rating."""
