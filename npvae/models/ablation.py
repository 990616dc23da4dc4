"""What a model's latent carries: the model made to decode the prior's mean."""
from __future__ import annotations


def zero_latent_mean(model):
    """Make the posterior mean 0 for every input, in place, and return ``model``.

    Separation uses ``z = mu``, so the model then decodes the prior's mean for every
    mixture: comparing its scores with the trained model's says what the latent
    carries (the rest travels through the skip connections). Works for the image
    models (``head.mu``) and a music Separator (the first half of ``head``'s channels;
    of every stack's head in a stacked model).
    """
    net = getattr(model, "model", model)
    for part in getattr(net, "hourglasses", [net]):
        head = part.head
        if hasattr(head, "mu"):                        # GaussianHead: a Dense for mu
            for p in head.mu.params.values():
                p[...] = 0
        else:                                          # Conv2d giving [mu, logvar] channels
            for p in head.params.values():
                p[:part.latent_channels] = 0
    return model
