"""anycharv.latent_cache: the job that turns a preprocessing output's ``ok`` clips into training
samples (VAE latents, CLIP embeddings, masks, pose) in WebDataset shards."""
