"""playworld.envs"""
