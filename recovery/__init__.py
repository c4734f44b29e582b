"""The known-answer experiment: does the student recover the planted society's mechanism? (`lsm recovery`)"""
