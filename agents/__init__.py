"""Tolerance policies for the InfoCNF environments: fixed, REINFORCE (paper) and SB3."""
