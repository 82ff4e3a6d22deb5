"""What several experiments share: the one record of a served request and its ``requests.csv`` schema."""
