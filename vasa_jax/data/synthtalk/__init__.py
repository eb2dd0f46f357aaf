"""SynthTalk: procedurally rendered talking heads with ground truth (geometry, rasteriser, renderer, data set)."""
