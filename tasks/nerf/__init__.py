"""Task ``nerf`` (paper Table 6, LLFF): so far its data layer, the LLFF camera file."""
