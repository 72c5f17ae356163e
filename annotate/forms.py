"""The app's forms (Flask-WTF): every one carries a CSRF token and validates on the server."""

from __future__ import annotations

import math

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

from studydb.schema import SCORE_MAX, SCORE_MIN


def finite(_form, field) -> None:
    """NaN passes NumberRange (every comparison with NaN is false): refuse it explicitly."""
    if field.data is not None and not math.isfinite(field.data):
        raise ValidationError("must be a number")


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
    display = StringField("Display (model, calibration)", [Length(max=255)])
    viewing_distance = StringField("Viewing distance", [Length(max=64)])
    lighting = StringField("Room lighting", [Length(max=255)])


class TrialForm(FlaskForm):
    position = IntegerField(validators=[InputRequired(), NumberRange(0, 100_000)])
    consistency = FloatField(
        validators=[InputRequired(), finite, NumberRange(SCORE_MIN, SCORE_MAX)]
    )
    perception = FloatField(validators=[InputRequired(), finite, NumberRange(SCORE_MIN, SCORE_MAX)])
    nsfw = BooleanField()
    nsfw_reason = TextAreaField(validators=[Optional(), Length(max=1000)])
    first_input_ms = IntegerField(validators=[Optional(), NumberRange(0, 86_400_000)])


class LoginForm(FlaskForm):
    password = PasswordField("Admin password", [DataRequired()])


class ActionForm(FlaskForm):
    """A bare form: a button that POSTs with a CSRF token."""
