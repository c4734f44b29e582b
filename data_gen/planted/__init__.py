"""The planted reference society: a documented parametric process whose answers are known exactly."""
