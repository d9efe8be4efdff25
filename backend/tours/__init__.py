"""Tours: the sharded catalogue (a tour lives on shard_for(tour.id)) and its photos."""
