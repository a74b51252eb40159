"""``difforge bench``: one denoiser through the runtimes a user would otherwise pick."""
