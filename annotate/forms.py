"""The app's forms (Flask-WTF): every one carries a CSRF token and validates on the server."""

from __future__ import annotations

import math
import re

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    FloatField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)


def finite(_form, field) -> None:
    """NaN passes NumberRange (every comparison with NaN is false): refuse it explicitly."""
    if field.data is not None and not math.isfinite(field.data):
        raise ValidationError("must be a number")


SCORE_TEXT = re.compile(r"(?:[0-4](?:\.[0-9])?|5(?:\.0)?)", re.ASCII)
"""A score as the slider sends it: on the 0.1 grid from 0 to 5, in ASCII digits only (Python's
float() would also take '٣' or '3.14159')."""


def on_slider_grid(_form, field) -> None:
    raw = (field.raw_data or [""])[0].strip()
    if not SCORE_TEXT.fullmatch(raw):
        raise ValidationError("must be a number from 0 to 5 in steps of 0.1")


def known_or_unknown(_form, field) -> None:
    """Environment notes are required: the experimenter writes what is known, or 'unknown'."""
    if not (field.data or "").strip():
        raise ValidationError('required: describe it, or write "unknown"')


class ConsentForm(FlaskForm):
    agree = BooleanField("I have read the above and agree to take part", [DataRequired()])


class RegisterForm(FlaskForm):
    age = IntegerField("Age", [InputRequired(), NumberRange(16, 120)])
    gender = SelectField("Gender", choices=["female", "male", "other", "prefer not to say"])
    vision_screening = StringField(
        "Vision screening result (entered by staff: acuity, colour vision)",
        [DataRequired(), Length(max=255)],
    )


class ResumeForm(FlaskForm):
    code = StringField("Your participant code", [DataRequired(), Length(max=64)])


class EnvironmentForm(FlaskForm):
    screen_width = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    screen_height = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    device_pixel_ratio = FloatField(validators=[InputRequired(), finite, NumberRange(0.1, 16)])
    browser = HiddenField(validators=[Length(max=512)])
    display = StringField(
        'Display (model, calibration) — or "unknown"', [known_or_unknown, Length(max=255)]
    )
    viewing_distance = StringField(
        'Viewing distance — or "unknown"', [known_or_unknown, Length(max=64)]
    )
    lighting = StringField('Room lighting — or "unknown"', [known_or_unknown, Length(max=255)])


class PracticeForm(FlaskForm):
    """A practice answer: both sliders, checked like a real one, never stored."""

    consistency = FloatField(validators=[InputRequired(), on_slider_grid, finite])
    perception = FloatField(validators=[InputRequired(), on_slider_grid, finite])


class TrialForm(PracticeForm):
    position = IntegerField(validators=[InputRequired(), NumberRange(0, 100_000)])
    nsfw = BooleanField()
    nsfw_reason = TextAreaField(validators=[Optional(), Length(max=1000)])
    first_input_ms = IntegerField(validators=[Optional(), NumberRange(0, 86_400_000)])
    reveal_ms = IntegerField(validators=[Optional(), NumberRange(0, 86_400_000)])
    scale = FloatField(validators=[Optional(), finite, NumberRange(0.01, 1)])
    slider_events = IntegerField(validators=[Optional(), NumberRange(0, 100_000)])


class LoginForm(FlaskForm):
    password = PasswordField("Admin password", [DataRequired()])


class ActionForm(FlaskForm):
    """A bare form: a button that POSTs with a CSRF token."""
