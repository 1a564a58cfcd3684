"""Self-boost generation: the stage-1 model re-generates each cached clip with another video's character
(the inputs of stage-2 training)."""
