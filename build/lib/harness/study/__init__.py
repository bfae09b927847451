"""Study: the whole question across sizes: the grid, workers, top-up and refinement (layer 7)."""
